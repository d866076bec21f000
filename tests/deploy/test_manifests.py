"""The deployment files against the code: every command parses with the real CLI,
ports agree, probes name real routes, manifests pass the Kubernetes schema."""

from __future__ import annotations

import copy
import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.keys import load_keys_file
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.deploy.manifests import (
    COMPOSE,
    DEPLOY,
    DOCKERFILES,
    K8S,
    ROOT,
    ParseError,
    abbreviated_flags,
    containers,
    dockerfile,
    exec_form,
    healthcheck_command,
    k8s_kind,
    k8s_named,
    k8s_objects,
    parse_cli,
    port_and_path,
    route_paths,
    urls_in,
    yaml_documents,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture(autouse=True)
def no_orpheus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ORPHEUS_* defaults: parse the files' commands as a clean container would."""
    import os

    for name in list(os.environ):
        if name.startswith("ORPHEUS_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def routes() -> dict[str, set[str]]:
    worker = create_worker(ToneEngine(), WorkerConfig())
    gateway = create_gateway(GatewayConfig(workers=("http://127.0.0.1:9",)))
    return {"worker": route_paths(worker), "gateway": route_paths(gateway)}


def role_of(command: list[str]) -> str:
    """Which app a command runs: ``serve`` answers with the gateway's routes."""
    sub = parse_cli(command).command
    assert sub in ("worker", "gateway", "serve"), f"not a server command: {command}"
    return "worker" if sub == "worker" else "gateway"


# --------------------------------------------------------------------------- every file parses


def test_every_yaml_file_parses() -> None:
    paths = sorted(DEPLOY.rglob("*.yaml"))
    assert {p.name for p in paths} >= {"compose.yaml", "gateway.yaml", "worker.yaml", "hpa.yaml", "alerts.yaml"}
    for path in paths:
        assert yaml_documents(path), f"{path} is empty"


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = yaml_documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_objects_have_the_fields_kubernetes_requires() -> None:
    names: set[tuple[str, str]] = set()
    for path, doc in k8s_objects():
        where = f"{path.name}: {doc.get('kind')}"
        assert doc.get("apiVersion"), where
        assert doc.get("kind"), where
        assert doc.get("metadata", {}).get("name"), where
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in names, f"{where} defined twice"
        names.add(key)
        if doc["kind"] in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            assert doc.get("spec"), where


def test_objects_pass_the_kubernetes_schema() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed: schema not checked"
    )
    for path, doc in k8s_objects():
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def test_the_schema_check_catches_a_typo() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    broken = copy.deepcopy(k8s_named("Deployment", "orpheus-worker"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


# --------------------------------------------------------------------------- commands exist in the CLI


def all_commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path in DOCKERFILES:
        for ins in dockerfile(path):
            if ins.keyword in ("CMD", "ENTRYPOINT"):
                found.append((path.name, exec_form(ins.argument)))
    for name, service in yaml_documents(COMPOSE)[0]["services"].items():
        found.append((f"compose {name}", service["command"]))
    for deployment, container in containers():
        found.append((f"k8s {deployment['metadata']['name']}", container["args"]))
    return found


def test_commands_are_named_in_every_file() -> None:
    sources = {source.split()[0] for source, _ in all_commands()}
    assert sources == {"Dockerfile.cpu", "Dockerfile.gpu", "compose", "k8s"}


@pytest.mark.parametrize(("source", "command"), all_commands(), ids=[s for s, _ in all_commands()])
def test_every_command_parses_with_the_real_cli(source: str, command: list[str]) -> None:
    try:
        args = parse_cli(command)
    except ParseError as exc:
        pytest.fail(f"{source}: {exc}")
    assert not abbreviated_flags(command), f"{source}: spell flags in full"
    assert args.host == "0.0.0.0", f"{source}: a container must listen on all interfaces"


def test_a_wrong_flag_is_caught() -> None:
    with pytest.raises(ParseError, match="--gpu-memory"):
        parse_cli(["orpheus-tts", "worker", "--gpu-memory", "0.9"])
    assert abbreviated_flags(["orpheus-tts", "worker", "--engin", "orpheus"]) == ["--engin"]
    with pytest.raises(ParseError, match="invalid choice"):
        parse_cli(["orpheus-tts", "worker", "--backend", "tensorrt"])


def test_images_run_what_the_brief_says() -> None:
    cpu = parse_cli(
        exec_form(next(i.argument for i in dockerfile(DEPLOY / "docker/Dockerfile.cpu") if i.keyword == "CMD"))
    )
    assert (cpu.command, cpu.port, cpu.engine) == ("serve", 8000, "embedded")
    gpu = parse_cli(
        exec_form(next(i.argument for i in dockerfile(DEPLOY / "docker/Dockerfile.gpu") if i.keyword == "CMD"))
    )
    assert (gpu.command, gpu.engine, gpu.backend, gpu.model, gpu.snac) == (
        "worker",
        "orpheus",
        "vllm",
        "/models/orpheus",
        "/models/snac",
    )


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_ports_probe_and_user(path: Path, routes: dict[str, set[str]]) -> None:
    instructions = dockerfile(path)
    assert sum(i.keyword == "FROM" for i in instructions) >= 2, "multi-stage: build tools stay out of the image"
    (cmd,) = [exec_form(i.argument) for i in instructions if i.keyword == "CMD"]
    args = parse_cli(cmd)
    exposed = {int(i.argument) for i in instructions if i.keyword == "EXPOSE"}
    assert exposed == {args.port}
    (health,) = [healthcheck_command(i.argument) for i in instructions if i.keyword == "HEALTHCHECK"]
    (url,) = urls_in(health)
    port, probe = port_and_path(url)
    assert port == args.port
    assert probe in routes[role_of(cmd)]
    users = [i.argument for i in instructions if i.keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize(
    ("path", "extras"), [("Dockerfile.cpu", {"embedded"}), ("Dockerfile.gpu", {"orpheus", "vllm"})]
)
def test_dockerfile_installs_existing_extras(path: str, extras: set[str]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = set(pyproject["project"]["optional-dependencies"])
    installs = [i.argument for i in dockerfile(DEPLOY / "docker" / path) if "pip install" in i.argument]
    assert len(installs) == 1
    named = set(installs[0].split('".[')[1].split(']"')[0].split(","))
    assert named == extras
    assert named <= declared
    for copied in [i.argument.split()[0] for i in dockerfile(DEPLOY / "docker" / path) if i.keyword == "COPY"]:
        if not copied.startswith("--from"):
            assert (ROOT / copied).exists(), f"{path} copies {copied}, which is not in the repository"


def test_cpu_image_base() -> None:
    bases = [i.argument.split()[0] for i in dockerfile(DEPLOY / "docker/Dockerfile.cpu") if i.keyword == "FROM"]
    assert set(bases) == {"python:3.11-slim"}


# --------------------------------------------------------------------------- compose


def compose_services() -> dict[str, Any]:
    return dict(yaml_documents(COMPOSE)[0]["services"])


def test_compose_gateway_reaches_both_workers() -> None:
    services = compose_services()
    gateway = parse_cli(services["gateway"]["command"])
    assert gateway.command == "gateway"
    assert len(gateway.worker) == 2
    for url in gateway.worker:
        port, _ = port_and_path(url)
        host = url.split("//")[1].split(":")[0]
        assert host in services, f"the gateway names {host}, which is not a compose service"
        worker = parse_cli(services[host]["command"])
        assert (worker.command, worker.port) == ("worker", port)
        assert [str(port)] == services[host]["expose"]
        assert services["gateway"]["depends_on"][host]["condition"] == "service_healthy"


def test_compose_publishes_only_the_gateway_on_loopback() -> None:
    services = compose_services()
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["gateway"]
    (mapping,) = published["gateway"]
    host_ip, _, container_port = mapping.split(":")
    assert host_ip == "127.0.0.1"
    assert int(container_port) == parse_cli(services["gateway"]["command"]).port


def test_compose_healthchecks_use_real_routes_and_ports(routes: dict[str, set[str]]) -> None:
    for name, service in compose_services().items():
        command = service["command"]
        (url,) = urls_in(service["healthcheck"]["test"])
        port, path = port_and_path(url)
        assert port == parse_cli(command).port, name
        assert path in routes[role_of(command)], name


# --------------------------------------------------------------------------- Kubernetes


def container_port(container: dict[str, Any], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in container["ports"] if p.get("name") == name_or_number]
    return int(port)


def test_k8s_ports_and_probes_match_the_commands(routes: dict[str, set[str]]) -> None:
    for deployment, container in containers():
        name = deployment["metadata"]["name"]
        args = parse_cli(container["args"])
        role = role_of(container["args"])
        metrics_port = getattr(args, "metrics_port", None)
        listeners = [args.port] if metrics_port is None else [args.port, int(metrics_port)]
        assert [p["containerPort"] for p in container["ports"]] == listeners, name
        probes = {
            kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in container
        }
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        for kind, probe in probes.items():
            assert container_port(container, probe["httpGet"]["port"]) == args.port, f"{name} {kind}"
            assert probe["httpGet"]["path"] in routes[role], f"{name} {kind}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == (args.port if metrics_port is None else int(metrics_port)), (
            name
        )
        assert annotations["prometheus.io/path"] in routes[role], name


def test_k8s_services_select_their_pods_and_ports() -> None:
    for service in k8s_kind("Service"):
        name = service["metadata"]["name"]
        deployment = k8s_named("Deployment", name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items(), name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            assert container_port(container, port["targetPort"]) == parse_cli(container["args"]).port, name


def test_k8s_gateway_reaches_the_worker_service() -> None:
    (container,) = k8s_named("Deployment", "orpheus-gateway")["spec"]["template"]["spec"]["containers"]
    args = parse_cli(container["args"])
    (url,) = args.worker
    port, _ = port_and_path(url)
    host = url.split("//")[1].split(":")[0]
    service = k8s_named("Service", host)
    assert port in [p["port"] for p in service["spec"]["ports"]]


def test_k8s_gateway_reads_the_keys_secret() -> None:
    pod = k8s_named("Deployment", "orpheus-gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    keys_file = Path(parse_cli(container["args"]).api_keys_file)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in mounts.values() if Path(m["mountPath"]) == keys_file.parent]
    assert mount["readOnly"] is True
    secret = k8s_named("Secret", volumes[mount["name"]]["secret"]["secretName"])
    assert keys_file.name in secret["stringData"]


def test_shipped_keys_file_holds_no_key_until_one_is_added(tmp_path: Path) -> None:
    """As shipped, no key is accepted (so the gateway refuses to start); its example stanza, filled in, loads."""
    text = k8s_named("Secret", "orpheus-keys")["stringData"]["keys.toml"]
    shipped = tmp_path / "shipped.toml"
    shipped.write_text(text)
    assert not Authenticator.from_sources(keys_file=shipped).enabled
    digest = hashlib.sha256(b"ork_example").hexdigest()
    filled = "\n".join(line.removeprefix("# ") for line in text.splitlines())
    filled = filled.replace("<64 hex digits: the key's SHA-256>", digest)
    example = tmp_path / "filled.toml"
    example.write_text(filled)
    [(name, sha, limits)] = load_keys_file(example)
    assert (name, sha) == ("web-frontend", digest)
    assert (limits.max_concurrent_streams, limits.requests_per_minute) == (8, 600)


def test_k8s_pods_are_locked_down() -> None:
    for deployment, container in containers():
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        # A Service named "orpheus" would inject ORPHEUS_PORT=tcp://..., which the CLI reads.
        assert pod["enableServiceLinks"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert pod["terminationGracePeriodSeconds"] > 30, f"{name}: running streams get 30 s to drain"


def test_k8s_workers_get_a_gpu_and_the_gateway_none() -> None:
    (worker,) = k8s_named("Deployment", "orpheus-worker")["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"].endswith(":gpu")
    assert parse_cli(worker["args"]).engine == "orpheus"
    (gateway,) = k8s_named("Deployment", "orpheus-gateway")["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in str(gateway["resources"])


def test_k8s_disruption_budgets_cover_both_deployments() -> None:
    budgets = k8s_kind("PodDisruptionBudget")
    for deployment in k8s_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, deployment["metadata"]["name"]


def test_k8s_env_comes_from_the_configmap() -> None:
    config = k8s_named("ConfigMap", "orpheus-config")
    for _, container in containers():
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]


def test_hpa_targets_the_worker_deployment() -> None:
    hpa = k8s_named("HorizontalPodAutoscaler", "orpheus-worker")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "orpheus-worker")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "orpheus_requests_waiting"
    assert hpa["spec"]["minReplicas"] >= 1
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def env_settings() -> list[tuple[str, str]]:
    """(source, variable) for every ORPHEUS_* variable the files set."""
    found = [(f"configmap {k}", k) for k in k8s_named("ConfigMap", "orpheus-config")["data"]]
    for name, service in compose_services().items():
        found += [(f"compose {name} {k}", k) for k in service.get("environment", {})]
    return found


@pytest.mark.parametrize(("source", "variable"), env_settings(), ids=[s for s, _ in env_settings()])
def test_every_variable_set_is_one_the_cli_reads(source: str, variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the variable changes what ``orpheus-tts`` runs with (a typo would change nothing)."""
    if variable == "ORPHEUS_API_KEYS":
        from orpheus_tts.cli import _authenticator

        args = parse_cli(["orpheus-tts", "gateway", "--host", "0.0.0.0", "--worker", "http://w:8001"])
        monkeypatch.setenv(variable, "k-one,k-two")
        assert _authenticator(args).key_names == [
            f"key-{hashlib.sha256(k).hexdigest()[:8]}" for k in (b"k-one", b"k-two")
        ]
        return
    commands = [["orpheus-tts", "worker"], ["orpheus-tts", "gateway"]]
    before = [vars(parse_cli(c)) for c in commands]
    monkeypatch.setenv(variable, "123")
    after = [vars(parse_cli(c)) for c in commands]
    changed = {k for b, a in zip(before, after, strict=True) for k in a if a[k] != b[k] and a[k] == 123}
    assert changed, f"{source}: no orpheus-tts setting reads {variable}"
