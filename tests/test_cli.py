"""The ``orpheus-tts`` command as people use it: files, formats, stdin, errors, keys, tables."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import av
import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.keys import load_keys_file
from tests.servers import run_cli

TEXT = "The command line speaks. It writes many formats."


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orpheus_tts.cli", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_say_wav_in_process_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "a.wav"
    done = cli("say", TEXT, "-o", str(out), "--engine", "test")
    assert done.returncode == 0, done.stderr
    assert "real-time factor" in done.stdout
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.readframes(wav.getnframes()) == render(TEXT)


@pytest.mark.parametrize(("suffix", "codec"), [(".mp3", "mp3"), (".flac", "flac"), (".ogg", "opus"), (".opus", "opus")])
def test_say_picks_format_from_extension(tmp_path: Path, suffix: str, codec: str) -> None:
    out = tmp_path / f"a{suffix}"
    done = cli("say", TEXT, "-o", str(out), "--engine", "test")
    assert done.returncode == 0, done.stderr
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name.startswith(codec)
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
    assert samples / rate == pytest.approx(len(render(TEXT)) / 2 / 24_000, abs=0.12)


def test_say_pcm_and_stdin_and_file(tmp_path: Path) -> None:
    text_file = tmp_path / "in.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    raw, from_file = tmp_path / "a.pcm", tmp_path / "b.pcm"
    assert cli("say", "-o", str(raw), "--engine", "test", stdin=TEXT).returncode == 0
    assert cli("say", "--file", str(text_file), "-o", str(from_file), "--engine", "test").returncode == 0
    assert raw.read_bytes() == from_file.read_bytes() == render(TEXT)


def test_say_through_a_server_with_params(tmp_path: Path) -> None:
    out = tmp_path / "a.wav"
    with run_cli("worker", "--engine", "test") as (url, _):
        done = cli("say", TEXT, "-o", str(out), "--url", url, "--speed", "2", "--voice", "tone-low")
        bad = cli("say", TEXT, "-o", str(tmp_path / "b.wav"), "--url", url, "--param", "speeed=2")
    assert done.returncode == 0, done.stderr
    with wave.open(str(out)) as wav:
        assert wav.readframes(wav.getnframes()) == render(TEXT, "tone-low", 2.0)
    assert bad.returncode == 1
    assert "speeed" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "b.wav").exists(), "a failed request leaves no partial file"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("say", "hi", "-o", "x.unknown", "--engine", "test"), "cannot tell the audio format"),
        (("say", "   ", "-o", "x.wav", "--engine", "test"), "no text"),
        (("say", "--file", "/no/such/file", "-o", "x.wav"), "cannot read"),
        (("say", "hi", "-o", "x.wav", "--url", "http://127.0.0.1:9"), "rror"),
        (("system", "--url", "http://127.0.0.1:9"), "cannot reach"),
        (("keys", "new", "bad name!"), "key name"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orpheus_tts.cli", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_keys_new_prints_a_stanza_the_gateway_accepts(tmp_path: Path) -> None:
    done = cli("keys", "new", "team-a", "--max-concurrent-streams", "2")
    assert done.returncode == 0
    key = done.stdout.split("owner): ", 1)[1].split()[0]
    stanza = done.stdout[done.stdout.index("[[keys]]") :]
    assert key not in stanza, "the keys file holds a hash, never the key"
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(stanza, encoding="utf-8")
    entries = load_keys_file(keys_file)
    assert entries[0][0] == "team-a"
    identity = Authenticator(entries).authenticate({"Authorization": f"Bearer {key}"})
    assert identity.name == "team-a"


def test_voices_and_system_tables() -> None:
    voices = cli("voices", "--engine", "test")
    assert voices.returncode == 0
    assert "tone-low" in voices.stdout
    with run_cli("serve", "--engine", "test", "--workers", "1") as (url, _):
        table = cli("system", "--url", url)
        raw = cli("system", "--url", url, "--json")
    assert table.returncode == 0
    assert "gateway" in table.stdout
    assert "127.0.0.1" in table.stdout
    assert '"role": "gateway"' in raw.stdout


def test_voice_aliases_are_configuration(tmp_path: Path) -> None:
    with run_cli("worker", "--engine", "test", "--voice-alias", "narrator=tone-low") as (url, _):
        import httpx

        voices = httpx.get(f"{url}/v1/voices").json()["voices"]
        ok = httpx.post(f"{url}/v1/tts/stream", json={"text": "hi", "voice": "narrator"})
        gone = httpx.post(f"{url}/v1/tts/stream", json={"text": "hi", "voice": "alloy"})
    assert next(v for v in voices if v["id"] == "tone-low")["aliases"] == ["narrator"]
    assert ok.status_code == 200
    assert gone.status_code == 404, "configured aliases replace the built-in ones"
    assert "narrator" in gone.json()["error"]["message"]


def test_say_realtime_speaks_each_line_as_it_arrives(tmp_path: Path) -> None:
    import httpx

    from tests.eventually import eventually_sync

    out = tmp_path / "a.pcm"
    with run_cli("worker", "--engine", "test") as (url, _):

        def characters() -> float:
            text = httpx.get(url + "/metrics").text
            lines = [line for line in text.splitlines() if line.startswith("orpheus_input_characters_total")]
            return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

        proc = subprocess.Popen(
            [sys.executable, "-m", "orpheus_tts.cli", "say", "--realtime", "--url", url, "-o", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write("The first line is spoken.\n")
        proc.stdin.flush()
        # Spoken while standard input is still open: the line was read as it arrived.
        assert eventually_sync(lambda: characters() >= len("The first line is spoken."), within_s=30)
        proc.stdin.write("Then the second one.\n")
        proc.stdin.close()
        proc.wait(timeout=60)
        assert proc.stdout is not None
        assert proc.stderr is not None
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert "real-time factor" in stdout
    assert out.read_bytes() == render("The first line is spoken.") + render("Then the second one.")


def test_say_realtime_needs_a_server() -> None:
    done = cli("say", "hi", "--realtime", "-o", "x.pcm")
    assert done.returncode == 1
    assert "--url" in done.stderr
    assert "Traceback" not in done.stderr
