"""API keys and quotas: both header styles, every way a credential is wrong, hashed key files, limits."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import sys
from pathlib import Path

import pytest

from orpheus_tts.gateway.auth import (
    ANONYMOUS,
    Authenticator,
    AuthError,
    DuplicateCredentialError,
    Identity,
    is_loopback_host,
)
from orpheus_tts.gateway.keys import (
    KeyLimits,
    KeysFileError,
    load_keys_file,
    new_key_stanza,
    parse_env_keys,
    sha256_hex,
)
from orpheus_tts.gateway.quotas import RATE_WINDOW_S, QuotaError
from orpheus_tts.protocol import ErrorCode

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

KEY = "sk-test-0123456789"
OTHER = "sk-other-abcdef"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rejected(auth: Authenticator, headers: dict[str, str]) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.authenticate(headers)
    error = info.value
    assert (error.code, error.http_status) == (ErrorCode.UNAUTHORIZED, 401)
    assert KEY not in error.message
    assert OTHER not in error.message
    return error


# --------------------------------------------------------------------------- credentials


def test_no_keys_means_open_access() -> None:
    auth = Authenticator.from_keys([])
    assert not auth.enabled
    assert auth.authenticate({}) is ANONYMOUS
    assert auth.authenticate({"Authorization": "Basic garbage"}) is ANONYMOUS


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"AUTHORIZATION": f"  Bearer   {KEY}  "},
        {"X-API-Key": KEY},
        {"x-api-key": f" {KEY} "},
        {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY},
        # A proxy's own Basic credentials do not hide a valid X-API-Key.
        {"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": KEY},
    ],
)
def test_both_header_styles_are_accepted(headers: dict[str, str]) -> None:
    auth = Authenticator.from_keys([KEY, OTHER])
    identity = auth.authenticate(headers)
    assert identity.name == f"key-{sha256_hex(KEY)[:8]}"
    assert KEY not in identity.name
    assert auth.authenticate({"X-API-Key": OTHER}).name != identity.name


def test_starlette_headers_work_too() -> None:
    from starlette.datastructures import Headers

    auth = Authenticator.from_keys([KEY])
    headers = Headers(raw=[(b"authorization", f"Bearer {KEY}".encode())])
    assert auth.authenticate(headers).name.startswith("key-")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"Content-Type": "application/json"}, "missing"),
        ({"Authorization": f"Bearer {OTHER}"}, "invalid"),
        ({"X-API-Key": KEY + "x"}, "invalid"),
        ({"X-API-Key": KEY[:-1]}, "invalid"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": "Bearer    "}, "malformed"),
        ({"Authorization": "Basic xyz"}, "malformed"),
        ({"Authorization": KEY}, "malformed"),
        ({"X-API-Key": "   "}, "malformed"),
        ({"Authorization": f"Bearer {KEY}", "X-API-Key": OTHER}, "malformed"),
        ({"X-API-Key": "k" * 10_000}, "malformed"),
        ({"X-API-Key": "clé-non-ascii"}, "malformed"),
    ],
)
def test_wrong_missing_and_malformed_credentials(headers: dict[str, str], reason: str) -> None:
    seen: list[str] = []
    auth = Authenticator.from_keys([KEY, OTHER], on_failure=seen.append)
    if reason == "invalid" and headers.get("Authorization") == f"Bearer {OTHER}":
        auth = Authenticator.from_keys([KEY], on_failure=seen.append)
    error = rejected(auth, headers)
    assert error.reason == reason
    assert seen == [reason]
    assert auth.failures == {reason: 1}


def test_a_broken_failure_listener_still_gives_401() -> None:
    def boom(reason: str) -> None:
        raise RuntimeError("metrics down")

    auth = Authenticator.from_keys([KEY], on_failure=boom)
    assert rejected(auth, {}).reason == "missing"


def test_keys_are_held_only_as_digests() -> None:
    auth = Authenticator.from_keys([KEY])
    held = repr(vars(auth)) + repr(auth._entries)
    assert KEY not in held
    assert hashlib.sha256(KEY.encode()).digest() in [entry.digest for entry in auth._entries]


@pytest.mark.parametrize("bad", ["", "has space", "tab\tkey", "ключ", "k" * 513])
def test_unusable_configured_keys_are_refused_at_startup(bad: str) -> None:
    with pytest.raises(KeysFileError, match="API key 1"):
        Authenticator.from_keys([bad])


def test_env_keys_parse() -> None:
    assert parse_env_keys(" a, b ,,c ,") == ["a", "b", "c"]
    assert parse_env_keys(None) == []
    assert parse_env_keys("") == []


def test_the_same_key_twice_is_one_key() -> None:
    auth = Authenticator.from_keys([KEY, KEY])
    assert len(auth.key_names) == 1


# --------------------------------------------------------------------------- keys file


def write_keys(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_keys_file_holds_hashes_and_names(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path,
        f"""
        [[keys]]
        name = "alice"
        sha256 = "{sha256_hex(KEY)}"
        max_concurrent_streams = 2
        requests_per_minute = 30

        [[keys]]
        name = "batch-job"
        sha256 = "{sha256_hex(OTHER).upper()}"
        """,
    )
    auth = Authenticator.from_sources(keys_file=path)
    assert auth.enabled
    alice = auth.authenticate({"Authorization": f"Bearer {KEY}"})
    assert alice.name == "alice"
    assert alice.limits == KeyLimits(max_concurrent_streams=2, requests_per_minute=30)
    batch = auth.authenticate({"X-API-Key": OTHER})
    assert (batch.name, batch.limits) == ("batch-job", KeyLimits())
    assert rejected(auth, {"X-API-Key": sha256_hex(KEY)}).reason == "invalid"  # the hash is not the key


def test_keys_file_and_plain_keys_combine(tmp_path: Path) -> None:
    path = write_keys(tmp_path, f'[[keys]]\nname = "alice"\nsha256 = "{sha256_hex(KEY)}"\n')
    auth = Authenticator.from_sources(keys=[OTHER, KEY], keys_file=path)
    assert auth.authenticate({"X-API-Key": KEY}).name == "alice"  # the file's name wins
    assert auth.authenticate({"X-API-Key": OTHER}).name.startswith("key-")


def test_empty_keys_file_leaves_auth_off(tmp_path: Path) -> None:
    assert not Authenticator.from_sources(keys_file=write_keys(tmp_path, "# no keys yet\n")).enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[keys]\nname=", "not valid TOML"),
        ('[[keys]]\nsha256 = "' + "a" * 64 + '"\n', "'name' is required"),
        ('[[keys]]\nname = "a b"\nsha256 = "' + "a" * 64 + '"\n', "'name' is required"),
        ('[[keys]]\nname = "a"\nsha256 = "abc"\n', "64 hex digits"),
        ('[[keys]]\nname = "a"\nkey = "plaintext"\nsha256 = "' + "a" * 64 + '"\n', "unknown fields \\['key'\\]"),
        ('[[keys]]\nname = "a"\nsha256 = "' + "a" * 64 + '"\nrequests_per_minute = 0\n', "positive integer"),
        ('[[keys]]\nname = "a"\nsha256 = "' + "a" * 64 + '"\nmax_concurrent_streams = 1.5\n', "positive"),
        ('[[keys]]\nname = "a"\nsha256 = "' + "a" * 64 + '"\nmax_concurrent_streams = true\n', "positive"),
        (
            '[[keys]]\nname = "a"\nsha256 = "' + "a" * 64 + '"\n[[keys]]\nname = "a"\nsha256 = "' + "b" * 64 + '"\n',
            "used twice",
        ),
        (
            '[[keys]]\nname = "a"\nsha256 = "' + "a" * 64 + '"\n[[keys]]\nname = "b"\nsha256 = "' + "A" * 64 + '"\n',
            "listed twice",
        ),
        ('keys = "alice"\n', "array of tables"),
        ('[key]\nname = "a"\n', "unknown top-level keys"),
    ],
)
def test_bad_keys_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write_keys(tmp_path, text)
    with pytest.raises(KeysFileError, match=message) as info:
        load_keys_file(path)
    assert str(path) in str(info.value)


def test_missing_keys_file(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="cannot read"):
        Authenticator.from_sources(keys_file=tmp_path / "absent.toml")


def test_new_key_stanza_round_trips(tmp_path: Path) -> None:
    key, stanza = new_key_stanza("ci-runner")
    assert key.startswith("ork_")
    assert len(key) > 40
    assert key not in stanza
    entry = tomllib.loads(stanza)["keys"][0]
    assert entry == {"name": "ci-runner", "sha256": sha256_hex(key)}
    auth = Authenticator.from_sources(keys_file=write_keys(tmp_path, stanza))
    assert auth.authenticate({"Authorization": f"Bearer {key}"}).name == "ci-runner"
    assert new_key_stanza("ci-runner")[0] != key


def test_new_key_stanza_with_limits(tmp_path: Path) -> None:
    key, stanza = new_key_stanza("bob", max_concurrent_streams=3, requests_per_minute=90)
    identity = Authenticator.from_sources(keys_file=write_keys(tmp_path, stanza)).authenticate({"X-API-Key": key})
    assert identity.limits == KeyLimits(max_concurrent_streams=3, requests_per_minute=90)


@pytest.mark.parametrize("name", ["", "has space", 'quote"', "-leading", "x" * 65, "naïve"])
def test_new_key_stanza_refuses_names_the_file_would_refuse(name: str) -> None:
    with pytest.raises(KeysFileError):
        new_key_stanza(name)


# --------------------------------------------------------------------------- quotas


def limited(clock: FakeClock | None = None, **limits: int) -> tuple[Authenticator, Identity]:
    auth = Authenticator([("alice", sha256_hex(KEY), KeyLimits(**limits))], clock=clock or FakeClock())
    return auth, auth.authenticate({"X-API-Key": KEY})


async def test_requests_per_minute_is_a_sliding_window_with_retry_after() -> None:
    clock = FakeClock()
    auth, alice = limited(clock, requests_per_minute=2)
    async with auth.admit(alice):  # t = 0
        pass
    clock.now += 5.0
    async with auth.admit(alice):  # t = 5
        pass
    clock.now += 5.0
    with pytest.raises(QuotaError) as info:  # t = 10
        async with auth.admit(alice):
            pass
    error = info.value
    assert (error.code, error.http_status, error.reason) == (ErrorCode.RATE_LIMITED, 429, "requests_per_minute")
    assert error.retry_after_s == pytest.approx(RATE_WINDOW_S - 10.0)
    assert error.headers() == {"Retry-After": "50"}
    clock.now += 49.0
    with pytest.raises(QuotaError):
        auth.acquire(alice)  # t = 59
    clock.now += 1.0  # t = 60: the first request leaves the window
    auth.acquire(alice).release()
    with pytest.raises(QuotaError) as info:
        auth.acquire(alice)
    assert info.value.retry_after_s == pytest.approx(5.0)  # when the second request leaves the window


async def test_rejected_requests_do_not_use_up_the_rate() -> None:
    clock = FakeClock()
    auth, alice = limited(clock, requests_per_minute=1, max_concurrent_streams=1)
    lease = auth.acquire(alice)
    for _ in range(5):
        with pytest.raises(QuotaError, match="streams open"):
            auth.acquire(alice)
    lease.release()
    clock.now += RATE_WINDOW_S
    auth.acquire(alice).release()


async def test_concurrency_limit_and_release() -> None:
    auth, alice = limited(max_concurrent_streams=2)
    async with auth.admit(alice), auth.admit(alice):
        assert auth.streams_open("alice") == 2
        with pytest.raises(QuotaError) as info:
            async with auth.admit(alice):
                pass
        assert (info.value.reason, info.value.http_status) == ("concurrent_streams", 429)
        assert info.value.headers() == {"Retry-After": "1"}
    assert auth.streams_open("alice") == 0
    async with auth.admit(alice):
        pass


async def test_concurrency_slot_is_released_on_cancellation() -> None:
    auth, alice = limited(max_concurrent_streams=1)
    entered = asyncio.Event()

    async def stream() -> None:
        async with auth.admit(alice):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(stream())
    await asyncio.wait_for(entered.wait(), 2)
    assert auth.streams_open("alice") == 1
    with pytest.raises(QuotaError):
        auth.acquire(alice)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert auth.streams_open("alice") == 0
    auth.acquire(alice).release()


async def test_slot_released_when_the_stream_errors_and_exit_is_idempotent() -> None:
    auth, alice = limited(max_concurrent_streams=1)
    admission = auth.admit(alice)
    with pytest.raises(RuntimeError):
        async with admission:
            raise RuntimeError("upstream failed")
    await admission.__aexit__(None, None, None)  # a second exit must not free someone else's slot
    held = auth.acquire(alice)
    await admission.__aexit__(None, None, None)
    assert auth.streams_open("alice") == 1
    held.release()
    held.release()
    assert auth.streams_open("alice") == 0


def test_a_dropped_lease_gives_its_slot_back(caplog: pytest.LogCaptureFixture) -> None:
    auth, alice = limited(max_concurrent_streams=1)
    lease = auth.acquire(alice)
    assert auth.streams_open("alice") == 1
    del lease
    gc.collect()
    assert auth.streams_open("alice") == 0
    assert "never released" in caplog.text


def test_quotas_are_per_key() -> None:
    auth = Authenticator(
        [
            ("alice", sha256_hex(KEY), KeyLimits(max_concurrent_streams=1)),
            ("bob", sha256_hex(OTHER), KeyLimits(max_concurrent_streams=1)),
        ]
    )
    alice = auth.authenticate({"X-API-Key": KEY})
    bob = auth.authenticate({"X-API-Key": OTHER})
    held = auth.acquire(alice)
    auth.acquire(bob).release()
    with pytest.raises(QuotaError, match="'alice'"):
        auth.acquire(alice)
    held.release()


def test_unlimited_keys_are_never_throttled() -> None:
    auth = Authenticator.from_keys([KEY])
    identity = auth.authenticate({"X-API-Key": KEY})
    leases = [auth.acquire(identity) for _ in range(1000)]
    for lease in leases:
        lease.release()
    assert auth.acquire(ANONYMOUS).name == "anonymous"


# --------------------------------------------------------------------------- binding


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_the_documented_keys_file_loads(tmp_path: Path) -> None:
    import re

    doc = (Path(__file__).parents[2] / "docs" / "operations-keys.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    entries = load_keys_file(write_keys(tmp_path, example.group(1)))
    assert [name for name, _, _ in entries] == ["web-frontend", "batch-jobs"]
    assert entries[0][2] == KeyLimits(max_concurrent_streams=8, requests_per_minute=600)


# --------------------------------------------------------------------------- duplicates and refunds


@pytest.mark.parametrize(
    "raw",
    [
        [(b"authorization", f"Bearer {KEY}".encode()), (b"authorization", f"Bearer {OTHER}".encode())],
        [(b"x-api-key", OTHER.encode()), (b"x-api-key", KEY.encode())],
        [(b"authorization", f"Bearer {KEY}".encode()), (b"Authorization", f"Bearer {KEY}".encode())],
    ],
)
def test_a_credential_header_sent_twice_is_refused(raw: list[tuple[bytes, bytes]]) -> None:
    from starlette.datastructures import Headers

    auth = Authenticator.from_keys([KEY])
    with pytest.raises(DuplicateCredentialError) as info:
        auth.authenticate(Headers(raw=[(k.lower(), v) for k, v in raw]))
    assert (info.value.code, info.value.http_status) == (ErrorCode.INVALID_REQUEST, 400)
    assert KEY not in info.value.message
    assert OTHER not in info.value.message
    assert auth.failures == {"duplicate": 1}


def test_a_refunded_request_gives_its_place_in_the_window_back() -> None:
    clock = FakeClock()
    auth, alice = limited(clock, requests_per_minute=2)
    for _ in range(10):
        auth.acquire(alice).refund()
    assert auth.quotas.requests_in_window("alice") == 0
    auth.acquire(alice).release()
    auth.acquire(alice).refund()  # refused: does not count
    held = auth.acquire(alice)
    held.refund()
    held.release()  # the first settlement wins
    auth.acquire(alice).release()
    assert auth.quotas.requests_in_window("alice") == 2
    with pytest.raises(QuotaError):
        auth.acquire(alice)
