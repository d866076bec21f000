"""The ``orpheus-tts`` command: run servers, speak text, inspect a cluster."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orpheus_tts import __version__
from orpheus_tts.gateway.config import (
    DEFAULT_DNS_REFRESH_S,
    DEFAULT_DRAIN_GRACE_S,
    DEFAULT_ENCODER_THREADS,
    DEFAULT_PROBE_INTERVAL_S,
    DEFAULT_QUOTA_LEASE_S,
    DEFAULT_QUOTA_STORE_FAILURE,
    DEFAULT_QUOTA_STORE_TIMEOUT_S,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_UPSTREAM_CLIENT,
    UPSTREAM_CLIENTS,
    GatewayConfig,
)
from orpheus_tts.realtime.limits import (
    DEFAULT_BUFFER_DELAY_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_BUFFERED_CHARS,
    DEFAULT_MAX_CONTEXTS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_OPENING_MAX_OTHERS,
    DEFAULT_OPENING_MIN_WORDS,
    DEFAULT_OUTBOX_MESSAGES,
    DEFAULT_PIPELINE_SEGMENTS,
    RealtimeLimits,
)
from orpheus_tts.serving.settings import (
    DEFAULT_BODY_IDLE_TIMEOUT_S,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADER_LINE_BYTES,
    HttpSettings,
)
from orpheus_tts.validation import DEFAULT_MAX_JSON_DEPTH
from orpheus_tts.worker.config import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MAX_TIMEOUT_S,
    DEFAULT_PLAYBACK_MARGIN_S,
    DEFAULT_SCHEDULER,
    DEFAULT_TARGET_UTILIZATION,
    DEFAULT_WORKER_DRAIN_GRACE_S,
    WorkerConfig,
)

__all__ = ["main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_WORKER_PORT = 8001
DEFAULT_GATEWAY_PORT = 8000
DEMO_TEXT = "Hello world from Orpheus. This sentence was spoken by a neural voice running on your own machine."


from orpheus_tts.clientcli import CliError  # noqa: E402


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"ORPHEUS_{name}", default)


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    from orpheus_tts.engines.registry import ENGINE_NAMES

    parser.add_argument("--engine", choices=ENGINE_NAMES, default=_env("ENGINE", "embedded"))
    parser.add_argument("--capacity", type=int, default=None, help="requests synthesized at once")
    parser.add_argument(
        "--voice-alias",
        action="append",
        default=[],
        metavar="NAME=VOICE",
        help="answer requests for NAME with VOICE (repeatable; replaces the built-in OpenAI/Orpheus aliases)",
    )
    parser.add_argument(
        "--enable-test-faults",
        action="store_true",
        help="test engine only: accept fault-injection parameters",
    )
    orpheus = parser.add_argument_group("orpheus engine")
    orpheus.add_argument(
        "--backend",
        default=_env("BACKEND", "transformers"),
        choices=["transformers", "vllm", "openai", "llamacpp"],
    )
    orpheus.add_argument("--model", default=_env("MODEL", None), help="model directory, GGUF file or id")
    orpheus.add_argument("--snac", default=_env("SNAC", None), help="SNAC decoder directory or id")
    orpheus.add_argument(
        "--backend-url",
        default=_env("BACKEND_URL", None),
        help="openai backend: base URL of the completions server",
    )
    orpheus.add_argument("--allow-download", action="store_true", help="let the engine download missing weights")
    orpheus.add_argument(
        "--backend-option",
        action="append",
        default=_backend_option_env(),
        metavar="KEY=VALUE",
        help="a setting of the chosen backend or of the engine, typed and checked (repeatable; "
        "`orpheus-tts backends` lists them); ORPHEUS_BACKEND_OPTIONS holds more, space-separated",
    )


def _backend_option_env() -> list[str]:
    import shlex

    return shlex.split(os.environ.get("ORPHEUS_BACKEND_OPTIONS", ""))


def _voice_aliases(pairs: list[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    aliases = {}
    for pair in pairs:
        name, sep, voice = pair.partition("=")
        if not sep or not name.strip() or not voice.strip():
            raise CliError(f"--voice-alias takes NAME=VOICE, got {pair!r}")
        aliases[name.strip()] = voice.strip()
    return aliases


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"capacity": args.capacity, "voice_aliases": _voice_aliases(args.voice_alias)}
    if args.engine == "test":
        options["faults"] = args.enable_test_faults
    elif args.engine == "orpheus":
        from orpheus_tts.engines.orpheus.backends.options import parse_backend_options

        options.update(backend=args.backend, model=args.model, snac=args.snac, allow_download=args.allow_download)
        if args.backend_url:
            options["base_url"] = args.backend_url
        try:
            backend_options = parse_backend_options(args.backend, args.backend_option)
        except Exception as exc:
            raise CliError(str(exc)) from exc
        options.update(backend_options)
    return options


def _add_gateway_args(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default=_env("HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=_env("PORT", str(port)))
    parser.add_argument("--api-key", action="append", default=[], help="accepted API key (repeatable)")
    parser.add_argument("--api-keys-file", default=_env("API_KEYS_FILE", None), help="TOML keys file")
    parser.add_argument(
        "--insecure-no-auth", action="store_true", help="allow serving without keys on a non-loopback address"
    )
    parser.add_argument(
        "--hedge-ttfb-ms",
        type=float,
        default=None,
        help="hedge to a second worker when no audio after this long",
    )
    parser.add_argument("--probe-interval-s", type=float, default=DEFAULT_PROBE_INTERVAL_S)
    parser.add_argument("--drain-grace-s", type=float, default=DEFAULT_DRAIN_GRACE_S)
    parser.add_argument(
        "--stall-timeout-s",
        type=float,
        default=_env("STALL_TIMEOUT_S", str(DEFAULT_STALL_TIMEOUT_S)),
        help="end a worker's stream as worker_lost after this long without a byte",
    )
    parser.add_argument(
        "--upstream-client",
        choices=UPSTREAM_CLIENTS,
        default=_env("UPSTREAM_CLIENT", DEFAULT_UPSTREAM_CLIENT),
        help="HTTP client for streams to http:// workers: lean (asyncio + httptools) or httpx",
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--encoder-threads",
        type=int,
        default=_env("ENCODER_THREADS", str(DEFAULT_ENCODER_THREADS)),
        help="threads for the OpenAI endpoint's audio encoders",
    )
    quotas = parser.add_argument_group("shared quotas")
    quotas.add_argument(
        "--quota-store",
        default=_env("QUOTA_STORE", None),
        help="redis://HOST:PORT/DB: quotas shared by every gateway on the store (default: in memory)",
    )
    quotas.add_argument(
        "--quota-lease-s",
        type=float,
        default=_env("QUOTA_LEASE_S", str(DEFAULT_QUOTA_LEASE_S)),
        help="how long a dead gateway's stream slot is held in the store",
    )
    quotas.add_argument(
        "--quota-store-timeout-s",
        type=float,
        default=_env("QUOTA_STORE_TIMEOUT_S", str(DEFAULT_QUOTA_STORE_TIMEOUT_S)),
        help="longest wait for one quota store operation",
    )
    quotas.add_argument(
        "--quota-store-failure",
        choices=("closed", "open"),
        default=_env("QUOTA_STORE_FAILURE", DEFAULT_QUOTA_STORE_FAILURE),
        help="while the store is unreachable: refuse with 503 (closed) or admit without quotas (open)",
    )


def _add_worker_limits(parser: argparse.ArgumentParser, queue: bool = True) -> None:
    if queue:  # the gateway keeps no queue of its own: workers do
        parser.add_argument("--max-queue", type=int, default=_env("MAX_QUEUE", str(DEFAULT_MAX_QUEUE)))
    parser.add_argument("--default-timeout-s", type=float, default=_env("DEFAULT_TIMEOUT_S", str(DEFAULT_DEADLINE_S)))
    parser.add_argument("--max-timeout-s", type=float, default=_env("MAX_TIMEOUT_S", str(DEFAULT_MAX_TIMEOUT_S)))
    parser.add_argument("--max-text-chars", type=int, default=_env("MAX_TEXT_CHARS", str(DEFAULT_MAX_TEXT_CHARS)))
    parser.add_argument(
        "--max-json-depth",
        type=int,
        default=_env("MAX_JSON_DEPTH", str(DEFAULT_MAX_JSON_DEPTH)),
        help="deepest nesting of a request body",
    )


_HTTP_LIMITS: tuple[tuple[str, str, type, Any, str], ...] = (
    ("--max-header-line-bytes", "MAX_HEADER_LINE_BYTES", int, DEFAULT_MAX_HEADER_LINE_BYTES, "longest header line"),
    ("--max-header-bytes", "MAX_HEADER_BYTES", int, DEFAULT_MAX_HEADER_BYTES, "largest request head"),
    ("--header-timeout-s", "HEADER_TIMEOUT_S", float, DEFAULT_HEADER_TIMEOUT_S, "seconds to send the headers"),
    ("--body-idle-timeout-s", "BODY_IDLE_TIMEOUT_S", float, DEFAULT_BODY_IDLE_TIMEOUT_S, "longest pause in a body"),
    ("--body-timeout-s", "BODY_TIMEOUT_S", float, DEFAULT_BODY_TIMEOUT_S, "seconds to send a whole body"),
    ("--keepalive-timeout-s", "KEEPALIVE_TIMEOUT_S", float, DEFAULT_KEEPALIVE_TIMEOUT_S, "idle keep-alive"),
    ("--max-connections", "MAX_CONNECTIONS", int, DEFAULT_MAX_CONNECTIONS, "open client connections"),
)
"""The connection limits every server takes (``serve`` passes them on to its workers)."""


_REALTIME_LIMITS: tuple[tuple[str, str, str, type, Any, str], ...] = (
    (
        "--realtime-max-contexts",
        "max_contexts",
        "REALTIME_MAX_CONTEXTS",
        int,
        DEFAULT_MAX_CONTEXTS,
        "contexts open at once",
    ),
    (
        "--realtime-max-buffered-chars",
        "max_buffered_chars",
        "REALTIME_MAX_BUFFERED_CHARS",
        int,
        DEFAULT_MAX_BUFFERED_CHARS,
        "characters of a context waiting for synthesis",
    ),
    (
        "--realtime-max-message-bytes",
        "max_message_bytes",
        "REALTIME_MAX_MESSAGE_BYTES",
        int,
        DEFAULT_MAX_MESSAGE_BYTES,
        "largest client message",
    ),
    (
        "--realtime-idle-timeout-s",
        "idle_timeout_s",
        "REALTIME_IDLE_TIMEOUT_S",
        float,
        DEFAULT_IDLE_TIMEOUT_S,
        "seconds without a message (and nothing to send) before the socket closes",
    ),
    (
        "--realtime-buffer-delay-s",
        "buffer_delay_s",
        "REALTIME_BUFFER_DELAY_S",
        float,
        DEFAULT_BUFFER_DELAY_S,
        "seconds without new text before buffered words are spoken",
    ),
    (
        "--realtime-pipeline-segments",
        "pipeline_segments",
        "REALTIME_PIPELINE_SEGMENTS",
        int,
        DEFAULT_PIPELINE_SEGMENTS,
        "segments of a context in synthesis at once",
    ),
    (
        "--realtime-opening-min-words",
        "opening_min_words",
        "REALTIME_OPENING_MIN_WORDS",
        int,
        DEFAULT_OPENING_MIN_WORDS,
        "a context's first segment may end at a clause after this many words (0: off)",
    ),
    (
        "--realtime-opening-max-others",
        "opening_max_others",
        "REALTIME_OPENING_MAX_OTHERS",
        int,
        DEFAULT_OPENING_MAX_OTHERS,
        "the opening cut applies only while at most this many other contexts are starting",
    ),
    (
        "--realtime-outbox-messages",
        "outbox_messages",
        "REALTIME_OUTBOX_MESSAGES",
        int,
        DEFAULT_OUTBOX_MESSAGES,
        "audio messages queued for a slow reader before synthesis waits",
    ),
)
"""The limits of each realtime socket (worker and gateway)."""


def _add_realtime_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("realtime (/v1/tts/realtime) limits")
    for flag, dest, env, kind, default, meaning in _REALTIME_LIMITS:
        group.add_argument(flag, dest=dest, type=kind, default=_env(env, str(default)), help=meaning)


def _realtime_limits(args: argparse.Namespace) -> RealtimeLimits:
    return RealtimeLimits(**{dest: getattr(args, dest) for _, dest, *_ in _REALTIME_LIMITS})


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _add_http_args(parser: argparse.ArgumentParser, metrics_port: bool = True) -> None:
    http = parser.add_argument_group("HTTP limits and request checks")
    for flag, env, kind, default, meaning in _HTTP_LIMITS:
        http.add_argument(flag, type=kind, default=_env(env, str(default)), help=meaning)
    http.add_argument(
        "--allow-origin",
        dest="allow_origins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed besides the server's own, e.g. https://app.example; * for any (repeatable)",
    )
    http.add_argument(
        "--allow-host",
        dest="allow_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name accepted besides the server's address, on an open loopback server (repeatable)",
    )
    if metrics_port:
        http.add_argument(
            "--metrics-port",
            type=int,
            default=_env("METRICS_PORT", None),
            help="serve /metrics only on this port, on the same host",
        )
    http.add_argument("--api-docs", action="store_true", help="serve /docs and /redoc (off by default)")
    http.add_argument(
        "--no-direct-routes",
        dest="direct_routes",
        action="store_false",
        help="serve the streaming route through FastAPI's middleware like the others (slower; for diagnosis)",
    )


def _http_settings(args: argparse.Namespace) -> HttpSettings:
    return HttpSettings(
        max_header_line_bytes=args.max_header_line_bytes,
        max_header_bytes=args.max_header_bytes,
        header_timeout_s=args.header_timeout_s,
        body_idle_timeout_s=args.body_idle_timeout_s,
        body_timeout_s=args.body_timeout_s,
        keepalive_timeout_s=args.keepalive_timeout_s,
        max_connections=args.max_connections,
        allow_origins=tuple([*args.allow_origins, *_env_list("ORPHEUS_ALLOW_ORIGINS")]),
        allow_hosts=tuple([*args.allow_hosts, *_env_list("ORPHEUS_ALLOW_HOSTS")]),
        metrics_port=int(args.metrics_port) if getattr(args, "metrics_port", None) is not None else None,
        api_docs=args.api_docs,
        direct_routes=args.direct_routes,
    )


def _http_worker_args(args: argparse.Namespace) -> list[str]:
    """The connection limits ``serve`` gives each worker it starts."""
    out = []
    for flag, *_ in _HTTP_LIMITS:
        out += [flag, str(getattr(args, flag.removeprefix("--").replace("-", "_")))]
    return out


def _realtime_worker_args(args: argparse.Namespace) -> list[str]:
    """The realtime socket limits ``serve`` gives each worker it starts."""
    out = []
    for flag, dest, *_ in _REALTIME_LIMITS:
        out += [flag, str(getattr(args, dest))]
    return out


def _serve_http(app: Any, host: str, port: int, settings: HttpSettings, **options: Any) -> Any:
    """A uvicorn server for ``app`` under ``settings``, and the sockets to run it on (``None``: its own)."""
    from orpheus_tts.serving.server import bind_sockets, uvicorn_config
    from orpheus_tts.serving.shutdown import DrainingServer

    server = DrainingServer(uvicorn_config(app, host, port, settings, **options), freeze_heap=True)
    sockets = bind_sockets(host, port, settings) if settings.metrics_port is not None else None
    return server, sockets


def _add_scheduler_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scheduling")
    group.add_argument(
        "--scheduler",
        choices=["deadline", "fifo"],
        default=_env("SCHEDULER", DEFAULT_SCHEDULER),
        help="deadline: each segment by playback deadline; fifo: a slot per request",
    )
    group.add_argument(
        "--playback-margin-s", type=float, default=_env("PLAYBACK_MARGIN_S", str(DEFAULT_PLAYBACK_MARGIN_S))
    )
    group.add_argument("--max-streams", type=int, default=_env("MAX_STREAMS", str(DEFAULT_MAX_STREAMS)))
    group.add_argument(
        "--target-utilization", type=float, default=_env("TARGET_UTILIZATION", str(DEFAULT_TARGET_UTILIZATION))
    )


def _scheduler_argv(args: argparse.Namespace) -> list[str]:
    """The scheduling flags again, for the workers ``serve`` starts."""
    return ["--scheduler", args.scheduler, "--playback-margin-s", str(args.playback_margin_s),
            "--max-streams", str(args.max_streams), "--target-utilization", str(args.target_utilization)]  # fmt: skip


def _worker_config(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        capacity=args.capacity,
        max_queue=args.max_queue,
        scheduler=args.scheduler,
        playback_margin_s=args.playback_margin_s,
        max_streams=args.max_streams,
        target_utilization=args.target_utilization,
        default_timeout_s=args.default_timeout_s,
        max_timeout_s=args.max_timeout_s,
        max_text_chars=args.max_text_chars,
        max_json_depth=args.max_json_depth,
        worker_id=getattr(args, "worker_id", None) or f"{args.host}:{args.port}",
        drain_grace_s=args.drain_grace_s,
        http=_http_settings(args),
        realtime=_realtime_limits(args),
    )


def _cmd_worker(args: argparse.Namespace) -> int:
    from orpheus_tts.engines.registry import create_engine
    from orpheus_tts.serving.shutdown import uvicorn_grace_s
    from orpheus_tts.worker.app import create_app

    engine = create_engine(args.engine, **_engine_options(args))
    config = _worker_config(args)
    app = create_app(engine, config)
    server, sockets = _serve_http(
        app,
        args.host,
        args.port,
        config.http,
        log_level=args.log_level,
        timeout_graceful_shutdown=uvicorn_grace_s(config.drain_grace_s),
    )
    server.run(sockets=sockets)
    return 0


def _gateway_config(args: argparse.Namespace, workers: list[str], **extra: str) -> GatewayConfig:
    return GatewayConfig(
        workers=tuple(workers),
        hedge_ttfb_ms=args.hedge_ttfb_ms or None,
        default_timeout_s=args.default_timeout_s,
        max_timeout_s=args.max_timeout_s,
        max_text_chars=args.max_text_chars,
        max_json_depth=args.max_json_depth,
        probe_interval_s=args.probe_interval_s,
        drain_grace_s=args.drain_grace_s,
        encoder_threads=args.encoder_threads,
        worker_dns=tuple(getattr(args, "worker_dns", ()) or ()),
        dns_refresh_s=getattr(args, "dns_refresh_s", DEFAULT_DNS_REFRESH_S),
        dns_nameserver=getattr(args, "dns_nameserver", None),
        quota_store=args.quota_store,
        quota_lease_s=args.quota_lease_s,
        quota_store_timeout_s=args.quota_store_timeout_s,
        quota_store_failure=args.quota_store_failure,
        stall_timeout_s=args.stall_timeout_s,
        upstream_client=args.upstream_client,
        http=_http_settings(args),
        realtime=_realtime_limits(args),
        extra=extra,
    )


def _authenticator(args: argparse.Namespace) -> Any:
    from orpheus_tts.gateway.auth import Authenticator, is_loopback_host

    keys = list(args.api_key or [])
    keys += [k.strip() for k in os.environ.get("ORPHEUS_API_KEYS", "").split(",") if k.strip()]
    auth = Authenticator.from_sources(keys=keys, keys_file=args.api_keys_file)
    if not auth.enabled and not is_loopback_host(args.host) and not args.insecure_no_auth:
        raise CliError(
            f"refusing to serve on {args.host} without API keys: pass --api-key, --api-keys-file or "
            "ORPHEUS_API_KEYS, or --insecure-no-auth to accept unauthenticated traffic"
        )
    return auth


class _Terminated(Exception):
    """SIGTERM arrived (and was already handled gracefully by the server)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _run_gateway(args: argparse.Namespace, workers: list[str], supervisor: Any = None) -> None:
    from orpheus_tts.gateway.app import create_app
    from orpheus_tts.serving.shutdown import uvicorn_grace_s

    auth = _authenticator(args)
    extra = {"mode": "serve"} if supervisor is not None else {}
    config = _gateway_config(args, workers, **extra)
    app = create_app(config, auth)
    server, sockets = _serve_http(
        app,
        args.host,
        args.port,
        config.http,
        log_level=args.log_level,
        timeout_graceful_shutdown=uvicorn_grace_s(args.drain_grace_s),
    )
    watcher = None
    if supervisor is not None:
        watcher = threading.Thread(target=supervisor.watch, name="worker-supervisor", daemon=True)
        watcher.start()
    # uvicorn handles SIGINT/SIGTERM gracefully (draining streams), then re-raises the
    # signal through the previous handler: make that an exception, so the workers are
    # stopped and the process exits 0 instead of dying by the re-raised SIGTERM.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        server.run(sockets=sockets)  # uvicorn's own loop setup: uvloop when installed
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if supervisor is not None:
            supervisor.stop()


def _cmd_gateway(args: argparse.Namespace) -> int:
    args.worker_dns = list(args.worker_dns) + [
        n.strip() for n in os.environ.get("ORPHEUS_WORKER_DNS", "").split(",") if n.strip()
    ]
    if not args.worker and not args.worker_dns:
        raise CliError("give at least one --worker URL or --worker-dns NAME:PORT")
    _run_gateway(args, list(args.worker))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from orpheus_tts.supervisor import WorkerSupervisor, default_worker_count

    _authenticator(args)  # refuse early, before any worker starts
    count = args.workers or default_worker_count(args.engine)
    worker_args = ["--engine", args.engine, "--max-queue", str(args.max_queue),
                   "--default-timeout-s", str(args.default_timeout_s), "--max-timeout-s", str(args.max_timeout_s),
                   "--max-text-chars", str(args.max_text_chars),
                   "--max-json-depth", str(args.max_json_depth), *_scheduler_argv(args)]  # fmt: skip
    worker_args += _http_worker_args(args) + _realtime_worker_args(args)
    if args.capacity:
        worker_args += ["--capacity", str(args.capacity)]
    if args.enable_test_faults:
        worker_args.append("--enable-test-faults")
    for alias in args.voice_alias:
        worker_args += ["--voice-alias", alias]
    if args.engine == "orpheus":
        worker_args += ["--backend", args.backend]
        for flag, value in (
            ("--model", args.model),
            ("--snac", args.snac),
            ("--backend-url", args.backend_url),
        ):
            if value:
                worker_args += [flag, value]
        if args.allow_download:
            worker_args.append("--allow-download")
        for pair in args.backend_option:
            worker_args += ["--backend-option", pair]
    supervisor = WorkerSupervisor(count, worker_args)
    supervisor.start()
    print(
        f"orpheus-tts: gateway on http://{args.host}:{args.port} with {count} worker(s) "
        f"({args.engine} engine) at {', '.join(supervisor.urls)}",
        flush=True,
    )
    try:
        _run_gateway(args, supervisor.urls, supervisor)
    finally:
        supervisor.stop()  # also when the gateway failed to start
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
    from orpheus_tts.engines.orpheus import BACKEND_NAMES
    from orpheus_tts.engines.orpheus.backends.options import backend_installed, declared_options

    if args.name is not None and args.name not in BACKEND_NAMES:
        raise CliError(f"unknown backend {args.name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
    for name in [args.name] if args.name else BACKEND_NAMES:
        print(f"{name} ({'installed' if backend_installed(name) else 'not installed'}): --backend {name}")
        options = declared_options(name)
        for scope, title in (("backend", "backend options"), ("engine", "engine options")):
            print(f"  {title}:")
            for option in (o for o in options if o.scope == scope):
                print(f"    {option.name}={option.kind} (default {option.default!r})  {option.help}".rstrip())
    print("\nSet with --backend-option KEY=VALUE (repeatable) or ORPHEUS_BACKEND_OPTIONS='KEY=VALUE ...'.")
    return 0


def _cmd_say(args: argparse.Namespace) -> int:
    from orpheus_tts.clientcli import SayOptions, parse_params, run_say

    params = parse_params(args.param)
    if args.speed is not None:
        params["speed"] = args.speed
    lines = None
    if args.realtime and args.text in (None, "-") and args.file is None:
        text, lines = "", iter(sys.stdin.readline, "")
    else:
        text = _read_text(args.text, args.file)
    options = SayOptions(
        text=text,
        output=args.output,
        voice=args.voice,
        params=params,
        url=args.url,
        api_key=args.api_key,
        play=args.play,
        engine=args.engine,
        engine_options=_engine_options(args),
        realtime=args.realtime,
        lines=lines,
    )
    return run_say(options)


def _read_text(arg: str | None, file: str | None) -> str:
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}") from exc
    elif arg is None or arg == "-":
        if sys.stdin.isatty():
            raise CliError("give the text as an argument, with --file, or on standard input")
        text = sys.stdin.read()
    else:
        text = arg
    if not text.strip():
        raise CliError("no text to speak")
    return text


def _cmd_voices(args: argparse.Namespace) -> int:
    from orpheus_tts.clientcli import run_voices

    return run_voices(args.url, args.api_key, args.engine, _engine_options(args))


def _cmd_system(args: argparse.Namespace) -> int:
    from orpheus_tts.clientcli import run_system

    return run_system(args.url, args.api_key, args.json)


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from orpheus_tts.clientcli import run_keys_new

    return run_keys_new(args.name, args.max_concurrent_streams, args.requests_per_minute)


def _cmd_demo(args: argparse.Namespace) -> int:
    from orpheus_tts.demo import run_demo

    return run_demo(args.output, args.text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orpheus-tts", description="Streaming text-to-speech.")
    parser.add_argument("--version", action="version", version=f"orpheus-tts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker: one engine behind admission control")
    worker.add_argument("--host", default=_env("HOST", DEFAULT_HOST))
    worker.add_argument("--port", type=int, default=_env("PORT", str(DEFAULT_WORKER_PORT)))
    worker.add_argument("--worker-id", default=None, help="name reported in metrics frames")
    worker.add_argument(
        "--drain-grace-s",
        type=float,
        default=_env("DRAIN_GRACE_S", str(DEFAULT_WORKER_DRAIN_GRACE_S)),
        help="on shutdown, how long running requests may take",
    )
    worker.add_argument("--log-level", default="warning")
    _add_engine_args(worker)
    _add_worker_limits(worker)
    _add_scheduler_args(worker)
    _add_http_args(worker)
    _add_realtime_args(worker)
    worker.set_defaults(func=_cmd_worker)

    gateway = sub.add_parser("gateway", help="run a gateway in front of running workers")
    _add_gateway_args(gateway, DEFAULT_GATEWAY_PORT)
    gateway.add_argument("--worker", action="append", default=[], help="worker base URL (repeatable)")
    gateway.add_argument(
        "--worker-dns",
        action="append",
        default=[],
        help="NAME:PORT of a headless Service: one worker per address NAME resolves to (repeatable)",
    )
    gateway.add_argument(
        "--dns-refresh-s",
        type=float,
        default=_env("DNS_REFRESH_S", str(DEFAULT_DNS_REFRESH_S)),
        help="how often --worker-dns names are resolved again",
    )
    gateway.add_argument(
        "--dns-nameserver",
        default=_env("DNS_NAMESERVER", None),
        help="HOST[:PORT] of the nameserver for --worker-dns (default: the system's)",
    )
    _add_worker_limits(gateway, queue=False)
    _add_http_args(gateway)
    _add_realtime_args(gateway)
    gateway.set_defaults(func=_cmd_gateway)

    serve = sub.add_parser("serve", help="the whole stack on this machine: a gateway and N worker processes")
    _add_gateway_args(serve, DEFAULT_GATEWAY_PORT)
    serve.add_argument(
        "--workers",
        type=int,
        default=_env("WORKERS", None),
        help="worker processes (default: one per two usable cores)",
    )
    _add_engine_args(serve)
    _add_worker_limits(serve)
    _add_scheduler_args(serve)
    _add_http_args(serve)
    _add_realtime_args(serve)
    serve.set_defaults(func=_cmd_serve)

    say = sub.add_parser("say", help="speak text into an audio file (format from its extension) or the speakers")
    say.add_argument("text", nargs="?", help="the text; omit it (or give -) to read standard input")
    say.add_argument("-f", "--file", default=None, help="read the text from this file")
    say.add_argument("-o", "--output", default=None, help="output file: .wav .mp3 .flac .ogg/.opus .aac .pcm")
    say.add_argument("--play", action="store_true", help="play through the speakers while it streams")
    say.add_argument(
        "--realtime",
        action="store_true",
        help="read the text line by line as it arrives and speak it as it comes (needs --url)",
    )
    say.add_argument("--voice", default=None)
    say.add_argument("--speed", type=float, default=None)
    say.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a generation parameter (repeatable)"
    )
    say.add_argument("--url", default=_env("URL", None), help="a running gateway or worker; default: in-process")
    say.add_argument("--api-key", default=_env("API_KEY", None))
    _add_engine_args(say)
    say.set_defaults(func=_cmd_say)

    voices = sub.add_parser("voices", help="list the voices of a server (--url) or of an engine")
    voices.add_argument("--url", default=_env("URL", None))
    voices.add_argument("--api-key", default=_env("API_KEY", None))
    _add_engine_args(voices)
    voices.set_defaults(func=_cmd_voices)

    system = sub.add_parser("system", help="a readable table of a gateway's workers (or a worker's load)")
    system.add_argument("--url", default=_env("URL", f"http://{DEFAULT_HOST}:{DEFAULT_GATEWAY_PORT}"))
    system.add_argument("--api-key", default=_env("API_KEY", None))
    system.add_argument("--json", action="store_true", help="print the raw JSON")
    system.set_defaults(func=_cmd_system)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_new = keys_sub.add_parser("new", help="print a new key and the keys-file stanza that accepts it")
    keys_new.add_argument("name", help="the key's name, shown in logs")
    keys_new.add_argument("--max-concurrent-streams", type=int, default=None)
    keys_new.add_argument("--requests-per-minute", type=int, default=None)
    keys_new.set_defaults(func=_cmd_keys_new)

    backends = sub.add_parser("backends", help="the Orpheus engine's backends and the options each takes")
    backends.add_argument("name", nargs="?", default=None, help="one backend (default: all)")
    backends.set_defaults(func=_cmd_backends)

    demo = sub.add_parser("demo", help="start the stack, speak a sentence into a WAV file, stop")
    demo.add_argument("--output", default="hello.wav")
    demo.add_argument("--text", default=DEMO_TEXT)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if os.environ.get("ORPHEUS_DEBUG"):
            raise
        # The base install is the SDK; servers and engines are extras.
        print(
            f"orpheus-tts: error: {exc}: this command needs the server extra "
            "(pip install 'orpheus-tts[server]', or an engine extra such as [embedded])",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # one clear line for people, not a traceback
        if os.environ.get("ORPHEUS_DEBUG"):
            raise
        print(f"orpheus-tts: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
