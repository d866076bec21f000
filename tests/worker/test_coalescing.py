"""The worker's body: the frames of one engine piece go out together, one piece of the body (one write).

Checked on the service's own body, piece by piece (each piece is one write
on the connection; TCP may merge writes, so a client's reads could not tell).
"""

from __future__ import annotations

from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.protocol import (
    SAMPLE_RATE_HZ,
    SAMPLE_WIDTH_BYTES,
    ChunkFrame,
    EosFrame,
    ErrorFrame,
    Frame,
    FrameDecoder,
    MetricsFrame,
    TTSRequest,
    WordsFrame,
)
from orpheus_tts.serving.metrics import ServiceMetrics
from orpheus_tts.serving.streaming import FinalPiece
from orpheus_tts.worker.config import WorkerConfig
from orpheus_tts.worker.service import COALESCE_BYTES, SynthesisService

TEXT = "Hello world from Orpheus. This is the second sentence!"


async def _pieces(
    engine: ToneEngine, request: TTSRequest, config: WorkerConfig | None = None
) -> list[tuple[bytes, list[Frame]]]:
    """Each piece of the worker's body, with its frames, in order."""
    service = SynthesisService(engine, config or WorkerConfig(), ServiceMetrics("worker"))
    prepared = await service.prepare(request)
    pieces: list[tuple[bytes, list[Frame]]] = []
    async for data in prepared.body:
        decoder = FrameDecoder()
        pieces.append((data, decoder.feed(data)))
        assert not decoder.close(), "a piece of the body ends at a line's end"
        if isinstance(data, FinalPiece):
            break
    return pieces


async def test_each_engine_piece_goes_out_in_one_piece_with_its_words_and_chunks() -> None:
    engine = ToneEngine(piece_samples=2400, word_timings=True)
    pieces = [
        frames
        for _, frames in await _pieces(
            engine, TTSRequest(text=TEXT, timestamps=True), WorkerConfig(max_chunk_samples=600)
        )
    ]
    assert len(pieces) == len(engine.journal) > 2, "one piece of the body per engine piece"
    first = pieces[0]
    assert isinstance(first[0], MetricsFrame), "the opening metrics go out with the first audio"
    assert isinstance(first[1], WordsFrame)
    assert [type(f) for f in first[2:]] == [ChunkFrame] * 4, "a 100 ms piece in 25 ms chunks, all together"
    for frames in pieces[1:-1]:
        assert ChunkFrame in {type(f) for f in frames} <= {ChunkFrame, WordsFrame}
    last = pieces[-1]
    assert isinstance(last[-1], EosFrame)
    assert isinstance(last[-2], MetricsFrame)
    assert isinstance(last[0], ChunkFrame), "the last piece's audio goes out with eos"
    chunks = [f for frames in pieces for f in frames if isinstance(f, ChunkFrame)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert b"".join(c.pcm for c in chunks) == render(TEXT)
    assert last[-1].samples_total == len(render(TEXT)) // SAMPLE_WIDTH_BYTES


async def test_a_long_piece_goes_out_in_writes_of_about_the_cap() -> None:
    text = "one long sentence " * 11 + "end."  # 10 ms of tone a character: one 2 s piece
    engine = ToneEngine(piece_samples=96_000)
    pieces = await _pieces(engine, TTSRequest(text=text), WorkerConfig(max_chunk_samples=2400))
    assert len(engine.journal) == 1
    assert len(render(text)) >= 1.9 * SAMPLE_RATE_HZ * SAMPLE_WIDTH_BYTES  # twenty 100 ms chunks, 6.4 kB of base64 each
    chunk_line = 4 * (2400 * SAMPLE_WIDTH_BYTES) // 3 + 100
    assert len(pieces) > 1, "split at the cap, not one write of the whole piece"
    for data, _ in pieces[:-1]:
        assert COALESCE_BYTES <= len(data) < COALESCE_BYTES + chunk_line
    chunks = [f for _, frames in pieces for f in frames if isinstance(f, ChunkFrame)]
    assert b"".join(c.pcm for c in chunks) == render(text)
    assert isinstance(pieces[-1][1][-1], EosFrame)


async def test_an_engine_error_mid_stream_ends_the_stream_after_the_audio_before_it() -> None:
    engine = ToneEngine(piece_samples=2400, faults=True)
    pieces = await _pieces(engine, TTSRequest(text=TEXT, params={"fault_error_after": 3}))
    frames = [f for _, piece in pieces for f in piece]
    assert [type(f) for f in frames if not isinstance(f, MetricsFrame)] == [ChunkFrame] * 3 + [ErrorFrame]
    assert len(pieces) == 4, "the three pieces, then the error"
