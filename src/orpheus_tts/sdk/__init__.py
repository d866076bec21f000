"""The Orpheus TTS Python SDK: ``OrpheusTTS`` and the exceptions it raises.

from orpheus_tts.sdk import OrpheusTTS

async with OrpheusTTS(["https://tts.example.com"], api_key="KEY") as tts:
    async for chunk in tts.stream(text="Hello world.", voice="tara"):
        ...  # raw PCM: s16le, mono, 24 kHz
"""

from orpheus_tts.protocol import CHANNELS, SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES
from orpheus_tts.routing.endpoint import EndpointSnapshot
from orpheus_tts.routing.settings import RoutingSettings
from orpheus_tts.sdk.client import OrpheusTTS
from orpheus_tts.sdk.events import Audio, Cancelled, Done, Event, Flushed, Metrics, Word, Words
from orpheus_tts.sdk.exceptions import (
    CircuitOpenError,
    ClientClosedError,
    ConnectError,
    DeadlineExceeded,
    EventLoopMismatchError,
    HTTPStatusError,
    InvalidRequestError,
    OrpheusError,
    ReadTimeout,
    RemoteProtocolError,
    StreamError,
)

__all__ = [
    "CHANNELS",
    "SAMPLE_RATE_HZ",
    "SAMPLE_WIDTH_BYTES",
    "Audio",
    "Cancelled",
    "CircuitOpenError",
    "ClientClosedError",
    "ConnectError",
    "DeadlineExceeded",
    "Done",
    "EndpointSnapshot",
    "Event",
    "EventLoopMismatchError",
    "Flushed",
    "HTTPStatusError",
    "InvalidRequestError",
    "Metrics",
    "OrpheusError",
    "OrpheusTTS",
    "ReadTimeout",
    "RemoteProtocolError",
    "RoutingSettings",
    "StreamError",
    "Word",
    "Words",
]
