"""The gateway: auth and quotas, routing to workers, and the OpenAI-compatible endpoint.

``orpheus_tts.gateway.app.create_app`` builds the ASGI app; ``keys`` reads and
makes API keys, ``quotas`` applies per-key limits and ``auth`` authenticates
requests; ``openai_speech`` translates OpenAI's
``POST /v1/audio/speech``. Nothing is imported here, so importing one piece
does not pull in the others.
"""
