"""``/v1/tts/realtime`` on a worker with the deterministic engine: order, latency, cancel, limits, bad input, faults."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest
import websockets

from orpheus_tts.engines.segmenter import Segmenter
from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.realtime.limits import IDLE_CLOSE_CODE, RealtimeLimits
from tests.eventually import eventually
from tests.realtime.client import conversation, realtime_worker
from tests.reliability.harness import metric

TEXT = (
    "The weather today is bright and clear. Later this evening, clouds will move in from the west, "
    "and rain is likely overnight. Tomorrow should be cooler, with a light breeze."
)


def _segments(text: str) -> list[str]:
    s = Segmenter()
    out: list[str] = []
    for word in text.split(" "):
        out += s.feed(word + " ")
    return out + s.end()


async def test_a_context_fed_word_by_word_is_its_segments_audio_in_order() -> None:
    rng = random.Random(1)
    with realtime_worker(ToneEngine()) as (url, _):
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            for word in TEXT.split(" "):
                await c.send(type="text", context_id="a", text=word + " ")
                await asyncio.sleep(rng.uniform(0, 0.01))
            await c.send(type="end", context_id="a")
            done = await c.until_type("done", "a")
    audio = c.of("a", "audio")
    assert [m["seq"] for m in audio] == list(range(len(audio)))
    pcm = c.audio("a")
    assert pcm == b"".join(render(segment) for segment in _segments(TEXT))
    assert done["samples_total"] == len(pcm) // 2 == sum(m["samples"] for m in audio)
    assert c.of("a")[-1] is done


async def test_first_audio_comes_after_the_first_sentence_and_before_end() -> None:
    with realtime_worker(ToneEngine()) as (url, _):
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text="First sentence here. ")
            first = await c.until_type("audio", "a")
            assert first["seq"] == 0
            # Only now does the rest of the text, and the end, go out.
            await c.send(type="text", context_id="a", text="And the rest of it")
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
    assert c.audio("a") == render("First sentence here.") + render("And the rest of it")


async def test_the_buffer_delay_speaks_complete_words_without_end() -> None:
    with realtime_worker(ToneEngine(), RealtimeLimits(buffer_delay_s=0.05)) as (url, _):
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text="no sentence end here but a pause")
            await c.until_type("audio", "a")
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
    # "pause" could still have grown: it waits for the end.
    assert c.audio("a") == render("no sentence end here but a") + render("pause")


async def test_flush_speaks_what_is_buffered_and_says_flushed_after_its_audio() -> None:
    with realtime_worker(ToneEngine()) as (url, _):
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text="half a thought")
            await c.send(type="flush", context_id="a")
            await c.until_type("flushed", "a")
            assert c.audio("a") == render("half a thought")
            await c.send(type="end", context_id="a")
            done = await c.until_type("done", "a")
    assert done["samples_total"] == len(render("half a thought")) // 2


async def test_cancel_stops_at_once_and_leaves_the_other_context_alone() -> None:
    engine = ToneEngine(capacity=4, compute_s_per_audio_s=0.5)
    with realtime_worker(engine) as (url, app):
        scheduler = app.state.service.scheduler
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="start", context_id="b")
            await c.send(type="text", context_id="a", text=TEXT * 3)
            await c.send(type="text", context_id="b", text="A short answer. ")
            await c.until_type("audio", "a")
            await c.send(type="cancel", context_id="a")
            await c.until_type("cancelled", "a")
            await c.send(type="end", context_id="b")
            await c.until_type("done", "b")
            assert await eventually(lambda: scheduler.running == 0)
            # Nothing of "a" arrives after its cancelled, even with "b" still talking.
            await c.send(type="start", context_id="c")
            await c.send(type="text", context_id="c", text="Done.")
            await c.send(type="end", context_id="c")
            await c.until_type("done", "c")
    kinds = [m["type"] for m in c.of("a")]
    assert kinds[-1] == "cancelled"
    assert "done" not in kinds
    assert c.audio("b") == render("A short answer.")
    assert c.audio("c") == render("Done.")


async def _error_for(c: Any, **message: Any) -> dict[str, Any]:
    await c.send(**message)
    error: dict[str, Any] = await c.until_type("error")
    return error


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ({"type": "text", "context_id": "x", "text": "hi"}, "invalid_request", "send 'start' first"),
        ({"type": "end", "context_id": "x"}, "invalid_request", "no open context"),
        ({"type": "start"}, "invalid_request", "context_id"),
        ({"type": "dance", "context_id": "x"}, "invalid_request", "unknown message type"),
        ({"type": "start", "context_id": "x", "output_format": "mp3_44100"}, "invalid_request", "output_format"),
        ({"type": "start", "context_id": "x", "voice": "nobody"}, "unknown_voice", "nobody"),
        ({"type": "start", "context_id": "x", "params": {"warp": 9}}, "invalid_request", "warp"),
        ({"type": "start", "context_id": "x", "params": {"speed": 99}}, "invalid_request", "speed"),
        ({"type": "start", "context_id": "x", "timestamps": "yes"}, "invalid_request", "timestamps"),
        ({"type": "text", "context_id": "x", "text": 5}, "invalid_request", "text"),
    ],
)
async def test_bad_messages_get_an_error_and_the_session_lives_on(
    message: dict[str, Any], code: str, words: str
) -> None:
    with realtime_worker(ToneEngine()) as (url, _):
        async with conversation(url) as c:
            error = await _error_for(c, **message)
            assert error["code"] == code
            assert words in error["message"]
            await _speaks(c, "ok")


async def _speaks(c: Any, cid: str) -> None:
    await c.send(type="start", context_id=cid)
    await c.send(type="text", context_id=cid, text="Still here.")
    await c.send(type="end", context_id=cid)
    await c.until_type("done", cid)
    assert c.audio(cid) == render("Still here.")


async def test_malformed_frames_and_limits_get_errors_and_the_session_lives_on() -> None:
    limits = RealtimeLimits(max_contexts=2, max_buffered_chars=100, max_message_bytes=1000)
    with realtime_worker(ToneEngine(compute_s_per_audio_s=0.2), limits) as (url, _):
        async with conversation(url) as c:
            ready = c.received[0]
            assert ready["limits"]["max_contexts"] == 2
            assert ready["limits"]["max_buffered_chars"] == 100
            assert ready["formats"][0] == "pcm_24000"
            await c.ws.send(b"\x00\x01")
            assert "binary" in (await c.until_type("error"))["message"]
            await c.ws.send("{not json")
            assert "JSON" in (await c.until_type("error"))["message"]
            await c.ws.send('{"type": "text", "context_id": "x", "text": NaN}')
            assert (await c.until_type("error"))["code"] == "invalid_request"
            await c.ws.send(json.dumps({"type": "text", "context_id": "x", "text": "a" * 2000}))
            assert (await c.until_type("error"))["code"] == "body_too_large"
            await c.send(type="start", context_id="a")
            assert "already open" in (await _error_for(c, type="start", context_id="a"))["message"]
            await c.send(type="start", context_id="b")
            assert "contexts are open" in (await _error_for(c, type="start", context_id="c"))["message"]
            await c.send(type="cancel", context_id="b")
            await c.until_type("cancelled", "b")
            # Over the buffer: that context ends with an error; the session goes on.
            error = await _error_for(c, type="text", context_id="a", text="word " * 30)
            assert error["code"] == "text_too_long"
            assert error["context_id"] == "a"
            await _speaks(c, "ok")


async def test_a_client_that_stops_reading_gets_backpressure_then_everything() -> None:
    produced = 0

    class CountingEngine(ToneEngine):
        async def synthesize_timed(self, text: str, voice: str, params: dict[str, Any]) -> Any:
            nonlocal produced
            async for piece in super().synthesize_timed(text, voice, params):
                produced += 1
                yield piece

    text = "This sentence is fairly long and takes a while to say. " * 100
    total_pieces = sum(-(-len(render(s, speed=0.25)) // 2 // 2400) for s in _segments(text))
    limits = RealtimeLimits(max_buffered_chars=len(text) + 10)
    with realtime_worker(CountingEngine(), limits) as (url, _):
        async with conversation(url, max_queue=4) as c:
            await c.send(type="start", context_id="a", params={"speed": 0.25})
            await c.send(type="text", context_id="a", text=text)
            await c.send(type="end", context_id="a")
            await c.until_type("audio", "a")
            await asyncio.sleep(1.0)  # the behaviour under test: a client that does not read
            stalled = produced
            assert stalled < total_pieces / 2, (stalled, total_pieces)
            done = await c.until_type("done", "a")
    assert done["samples_total"] == len(c.audio("a")) // 2
    assert produced == total_pieces


async def test_a_client_that_vanishes_stops_all_its_engine_work() -> None:
    with realtime_worker(ToneEngine(capacity=4, compute_s_per_audio_s=0.5)) as (url, app):
        scheduler = app.state.service.scheduler
        async with conversation(url) as c:
            for cid in ("a", "b"):
                await c.send(type="start", context_id=cid)
                await c.send(type="text", context_id=cid, text=TEXT * 3)
            await c.until_type("audio")
            assert scheduler.running >= 1
        assert await eventually(lambda: scheduler.running == 0)


async def test_an_idle_socket_is_closed_with_the_announced_code() -> None:
    with realtime_worker(ToneEngine(), RealtimeLimits(idle_timeout_s=0.3)) as (url, _):
        async with conversation(url) as c:
            assert c.received[0]["limits"]["idle_timeout_s"] == 0.3
            error = await c.until_type("error")
            assert error["code"] == "deadline_exceeded"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await c.next()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == IDLE_CLOSE_CODE


async def test_a_page_from_another_origin_cannot_open_a_socket() -> None:
    with realtime_worker(ToneEngine()) as (url, _):
        host = url.split("/")[2]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"Origin": "http://evil.example"})
        assert refused.value.response.status_code == 403
        async with conversation(url, additional_headers={"Origin": f"http://{host}"}) as c:
            await _speaks(c, "a")


async def test_an_auth_message_is_accepted_first_and_refused_later() -> None:
    with realtime_worker(ToneEngine()) as (url, _):
        async with conversation(url) as c:
            await c.send(type="auth", api_key="")  # an open server takes it, as a browser sends it
            await _speaks(c, "a")
            error = await _error_for(c, type="auth", api_key="k")
            assert "first message" in error["message"]
            await _speaks(c, "b")
    assert not [m for m in c.received if m["type"] == "error" and "first" not in m["message"]]


async def test_a_completed_context_counts_each_segment_as_ok() -> None:
    """The realtime path stops reading a segment at its eos: that is a finished stream, not a cancelled one."""
    with realtime_worker(ToneEngine()) as (ws_url, _):
        http_url = "http" + ws_url.removeprefix("ws").removesuffix("/v1/tts/realtime")
        async with conversation(ws_url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text=TEXT)
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
        segments = len(_segments(TEXT))
        assert await eventually(lambda: metric(http_url, "orpheus_requests_total", outcome="ok") == segments)
        assert metric(http_url, "orpheus_requests_total", outcome="cancelled") == 0


async def test_later_segments_are_requested_with_the_audio_their_listener_still_holds() -> None:
    """Each segment tells the scheduler how much of the context's audio is still unheard (``playback_lead_s``)."""
    # Slow compute (a quarter of real time) so segments are requested while earlier audio still plays.
    with realtime_worker(ToneEngine(compute_s_per_audio_s=0.25)) as (url, app):
        service = app.state.service
        leads: list[float] = []
        asked: list[float] = []
        prepare = service.prepare

        async def recording(request: Any) -> Any:
            leads.append(request.playback_lead_s)
            asked.append(time.monotonic())
            return await prepare(request)

        service.prepare = recording
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text=TEXT)
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
    segments = _segments(TEXT)
    assert len(leads) == len(segments)
    assert leads[0] == 0.0, "nothing is playing before the first segment"
    # Each later segment is asked for once the audio before it is all there, so its lead is at
    # least that audio less the time since the first request (the listener started later than
    # that): a segment asked for at its predecessor's first chunk would say only that chunk.
    before_s = 0.0
    for k in range(1, len(segments)):
        before_s += len(render(segments[k - 1])) / (2 * 24_000)
        assert leads[k] >= before_s - (asked[k] - asked[0]) - 0.002, (k, leads, before_s)
        assert leads[k] <= before_s + 0.001


async def test_sockets_contexts_and_first_audio_are_counted_in_metrics() -> None:
    with realtime_worker(ToneEngine()) as (ws_url, _):
        http_url = "http" + ws_url.removeprefix("ws").removesuffix("/v1/tts/realtime")
        async with conversation(ws_url) as c:
            assert metric(http_url, "orpheus_realtime_sockets") == 1
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text="One finished sentence.")
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
            await c.send(type="start", context_id="b")
            await c.send(type="text", context_id="b", text="Cut short. " * 20)
            await c.until_type("audio", "b")
            await c.send(type="cancel", context_id="b")
            await c.until_type("cancelled", "b")
            await c.send(type="start", context_id="c")
            await c.send(type="text", context_id="c", text="Still talking when the socket goes")
        assert await eventually(lambda: metric(http_url, "orpheus_realtime_sockets") == 0)
        assert await eventually(lambda: metric(http_url, "orpheus_realtime_contexts_total", outcome="closed") == 1)
        for outcome in ("done", "cancelled"):
            assert metric(http_url, "orpheus_realtime_contexts_total", outcome=outcome) == 1, outcome
        assert metric(http_url, "orpheus_realtime_first_audio_seconds_count") == 2


@pytest.mark.parametrize(
    ("opening", "segments"), [(1, ["Sure,", "I can help with that."]), (0, ["Sure, I can help with that."])]
)
async def test_the_opening_clause_cut_is_a_setting(opening: int, segments: list[str]) -> None:
    with realtime_worker(ToneEngine(), RealtimeLimits(opening_min_words=opening)) as (url, _):
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text="Sure, I can help with that. ")
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
    assert c.audio("a") == b"".join(render(s) for s in segments)


@pytest.mark.parametrize("max_others", [0, 1])
async def test_the_opening_cut_waits_while_other_contexts_are_starting(max_others: int) -> None:
    """A one-word opening is for a context that starts alone: beside another context that is still
    before its second segment (on any socket), the first segment is the whole first sentence."""
    limits = RealtimeLimits(opening_max_others=max_others)
    with realtime_worker(ToneEngine(), limits) as (url, app):
        service = app.state.service
        texts: list[str] = []
        prepare = service.prepare

        async def recording(request: Any) -> Any:
            texts.append(request.text)
            return await prepare(request)

        service.prepare = recording
        async with conversation(url) as first, conversation(url) as second:
            await first.send(type="start", context_id="a")
            await first.send(type="text", context_id="a", text="Sure, I can")  # its opening, then it waits
            await first.until_type("audio", "a")
            await second.send(type="start", context_id="b")
            await second.send(type="text", context_id="b", text="Sure, I can help with that. ")
            await second.send(type="end", context_id="b")
            await second.until_type("done", "b")
            await first.send(type="text", context_id="a", text=" help with that. ")
            await first.send(type="end", context_id="a")
            await first.until_type("done", "a")
            await second.send(type="start", context_id="c")  # starts alone again
            await second.send(type="text", context_id="c", text="Sure, I can help with that. ")
            await second.send(type="end", context_id="c")
            await second.until_type("done", "c")
    cut, whole = ["Sure,", "I can help with that."], ["Sure, I can help with that."]
    assert second.audio("b") == b"".join(render(s) for s in (cut if max_others else whole))
    assert first.audio("a") == second.audio("c") == b"".join(render(s) for s in cut)
    assert texts.count("Sure,") == (3 if max_others else 2), texts
