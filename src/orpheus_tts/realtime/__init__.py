"""Realtime text-to-speech over a WebSocket: text in as it is written, audio and word timings out.

The package is transport-agnostic at its core: :mod:`~orpheus_tts.realtime.session`
runs the contexts of one socket given a "synthesize one segment" callable, so
the same code serves a worker (segments go to its engine) and the gateway
(each segment is one v1 request through the routing core).
"""
