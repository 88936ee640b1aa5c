"""Offline checks of the Kubernetes deployment files (docs/deploy.md, "What is validated offline").

No cluster, no Helm and no network here, so the files are checked against schemas that ship with
the repository or with its test dependencies:

- ``deploy/helm/values.yaml`` against ``deploy/helm/dagster-values.schema.json`` (written from the
  dagster chart's values models, stricter where the chart would silently ignore a misspelt key),
  with the Kubernetes objects inside it checked against the Kubernetes definitions that
  kubernetes-validate bundles;
- ``deploy/k8s/*.yaml`` with kubernetes-validate, strict (unknown fields fail), for one Kubernetes
  version;
- the consistency the schemas cannot see: one image, one Secret and one ConfigMap for every pod,
  every setting in the ConfigMap a real setting, the code location's module, the pools of the
  stages, resources against the measured peak, and the Dockerfile's lock-file install, non-root
  user and code-server command.

Each schema check is paired with a mutation that must fail, so a schema that accepts anything
cannot pass unnoticed.

The hand-written schema is checked against the chart's own, by hand, not here: on 2026-11-30
``bench/check_helm_values.py`` merged these values over the chart's default ``values.yaml`` (as Helm
does) and validated them against the chart's generated ``values.schema.json``, both of
dagster-io/dagster at commit 437f92d953812a3efdf5a464ba196eb3fcd9a777 (a master commit with the
chart's top-level ``concurrency`` section, added in January 2026; master's ``Chart.yaml`` names no
release, so not the 1.13.27 chart itself): no errors. Every property path this schema constrains
exists there with a compatible type; four requirements of the chart's that this schema lacked (a
pull policy on each image, among them) were added. Those files are not in the repository
(docs/deploy.md), so CI checks the hand-written subset only.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.settings import ENV_PREFIX, SECRET_VARIABLES, Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
VALUES_SCHEMA = ROOT / "deploy" / "helm" / "dagster-values.schema.json"
K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The Kubernetes version the manifests are validated against (docs/deploy.md says which).
KUBERNETES_VERSION = "1.30.0"
# docs/benchmarks.md, bench/speed_pipeline.py: peak RSS of the process that ran the enhanced stage
# (21,737 items x 50,000 entries, index build included) was 631 MB (SQLite) and 649 MB (Postgres);
# the code server's process holding the loaded definitions measured 339 MB (docs/deploy.md).
MEASURED_STAGE_PEAK_BYTES = 649 * 10**6
MEASURED_DEFINITIONS_PROCESS_BYTES = 339 * 10**6

SECRET_NAME = "matching-pipeline-secrets"
CONFIG_NAME = "matching-pipeline-config"
SECRET_KEYS = {
    "OPENAI_API_KEY",
    "BRAVE_SEARCH_API_KEY",
    "MATCHING_WEBHOOK_SECRET",
    "MATCHING_API_TOKEN",
    "MATCHING_DATABASE_URL",
}


# --- helpers ------------------------------------------------------------------------------------


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted(K8S_DIR.glob("*.yaml"))
        for doc in _load_yaml_documents(path)
    ]


def _k8s_object(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for _, doc in _k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _code_location(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _run_launcher(values: dict[str, Any]) -> dict[str, Any]:
    return values["runLauncher"]["config"]["k8sRunLauncher"]


def _api_container() -> dict[str, Any]:
    (container,) = _k8s_object("Deployment", "matching-pipeline-api")["spec"]["template"]["spec"]["containers"]
    return container


_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|m|k|M|G|T)?$")
_FACTORS: dict[str | None, float] = {
    None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40
}


def _quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (``1536Mi``, ``250m``, ``"2"``) as a plain number."""
    match = _QUANTITY.match(str(value))
    assert match, f"{value!r} is not a Kubernetes quantity this test understands"
    return float(match["number"]) * _FACTORS[match["suffix"]]


@pytest.fixture(scope="module")
def values_validator() -> jsonschema.protocols.Validator:
    """The values schema, with its ``https://kubernetes.io/api/_definitions.json`` references
    resolved from kubernetes-validate's bundled (strict) definitions: nothing is fetched."""
    schema = json.loads(VALUES_SCHEMA.read_text())
    definitions_file = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{KUBERNETES_VERSION}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(definitions_file.read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    # The schema declares draft 2020-12 ($defs, if/then), the dialect pydantic v2 (which generates
    # the chart's own schema) and the bundled Kubernetes definitions use.
    validator_class = jsonschema.validators.validator_for(schema)
    assert validator_class is jsonschema.Draft202012Validator
    validator_class.check_schema(schema)
    return validator_class(schema, registry=registry)


def _errors(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(instance)]


# --- the Helm values against the chart's values schema -------------------------------------------


def test_values_match_the_chart_schema(values_validator: jsonschema.protocols.Validator) -> None:
    assert _errors(values_validator, _values()) == []


def _set(path: str, value: Any) -> Any:
    def mutate(values: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = values
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return mutate


# Each mistake, and where in the values the schema must report it.
MUTATIONS: dict[str, tuple[Any, str]] = {
    # The chart's envSecrets are Kubernetes SecretEnvSource objects, not bare names.
    "secret given as a bare name": (
        _set("runLauncher.config.k8sRunLauncher.envSecrets", [SECRET_NAME]),
        "runLauncher.config.k8sRunLauncher.envSecrets.0",
    ),
    # The chart has no per-pool limits: this key would not limit pool `openai`.
    "per-pool limit": (_set("concurrency.pools.openai", 1), "concurrency.pools"),
    # The instance template renders only the keys it knows: a misspelt one would be dropped.
    "misspelt run-monitoring key": (
        _set("dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSecond", 30),
        "dagsterDaemon.runMonitoring",
    ),
    # The deployment's name becomes a Service name: underscores are not allowed.
    "code location name with underscore": (
        _set("dagster-user-deployments.deployments.0.name", "matching_pipeline"),
        "dagster-user-deployments.deployments.0.name",
    ),
    "misspelt resources field": (
        _set("runLauncher.config.k8sRunLauncher.resources", {"request": {"cpu": "1"}}),
        "runLauncher.config.k8sRunLauncher.resources",
    ),
    "key the postgresql section does not have": (_set("postgresql.postgresqlPort", 5432), "postgresql"),
    "K8sRunLauncher without its config": (_set("runLauncher.config", {}), "runLauncher.config"),
    "code server without arguments": (
        lambda values: _code_location(values).pop("codeServerArgs"),
        "dagster-user-deployments.deployments.0",
    ),
    # The chart's schema requires a pull policy on every image it is given (no default fills one
    # inside the deployments list or in the run launcher, which has no default image).
    "image without pull policy": (
        lambda values: _run_launcher(values)["image"].pop("pullPolicy"),
        "runLauncher.config.k8sRunLauncher.image",
    ),
    # The chart's code-server readiness probe takes Kubernetes fields plus a required `enabled`.
    "readiness probe without enabled": (
        _set("dagster-user-deployments.deployments.0.readinessProbe", {"periodSeconds": 20}),
        "dagster-user-deployments.deployments.0.readinessProbe",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_values_schema_rejects_mistakes(values_validator: jsonschema.protocols.Validator, mutation: str) -> None:
    mutate, where = MUTATIONS[mutation]
    values = copy.deepcopy(_values())
    mutate(values)
    paths = [".".join(map(str, error.absolute_path)) for error in values_validator.iter_errors(values)]
    assert where in paths, f"the schema did not report {mutation} at {where}: {paths}"


def test_run_limit_is_set_in_one_place_only() -> None:
    """The chart's instance template fails a release that sets the run limit both under
    ``concurrency.runs`` and under the queued run coordinator's config."""
    values = _values()
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] >= 1
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
    assert queued.get("maxConcurrentRuns") is None


def test_every_stage_pool_admits_one_step_and_slots_are_freed() -> None:
    values = _values()
    pools = {spec.pool for spec in STAGE_SPECS.values() if spec.pool}
    assert pools == {"openai", "web_search"}
    # No per-pool limits exist in the chart: the default limit is what bounds each of these pools.
    assert values["concurrency"]["pools"]["defaultLimit"] == 1
    assert all(pool in VALUES.read_text() for pool in pools), "values.yaml should name the pools it limits"
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    # Without it a crashed run keeps its slot and a limit-1 pool blocks for good.
    assert monitoring["enabled"] is True and monitoring["freeSlotsAfterRunEndSeconds"] > 0


def test_daemon_settings_match_the_projects_postgres_instance() -> None:
    """The chart renders the instance the project already runs on one host
    (deploy/postgres/dagster.yaml): same queue, pools, retries and monitoring, except the start
    timeout, which is longer on purpose (a run pod may wait for a node and an image pull)."""
    instance = yaml.safe_load((ROOT / "deploy" / "postgres" / "dagster.yaml").read_text())
    values = _values()
    daemon = values["dagsterDaemon"]
    rendered = {
        ("concurrency", "runs", "max_concurrent_runs"): values["concurrency"]["runs"]["maxConcurrentRuns"],
        ("concurrency", "pools", "default_limit"): values["concurrency"]["pools"]["defaultLimit"],
        ("run_retries", "enabled"): daemon["runRetries"]["enabled"],
        ("run_retries", "max_retries"): daemon["runRetries"]["maxRetries"],
        ("run_retries", "retry_on_asset_or_op_failure"): daemon["runRetries"]["retryOnAssetOrOpFailure"],
        ("run_monitoring", "enabled"): daemon["runMonitoring"]["enabled"],
        ("run_monitoring", "poll_interval_seconds"): daemon["runMonitoring"]["pollIntervalSeconds"],
        ("run_monitoring", "cancel_timeout_seconds"): daemon["runMonitoring"]["cancelTimeoutSeconds"],
        ("run_monitoring", "max_resume_run_attempts"): daemon["runMonitoring"]["maxResumeRunAttempts"],
        ("run_monitoring", "free_slots_after_run_end_seconds"): daemon["runMonitoring"]["freeSlotsAfterRunEndSeconds"],
        ("sensors", "use_threads"): daemon["sensors"]["useThreads"],
        ("sensors", "num_workers"): daemon["sensors"]["numWorkers"],
        ("schedules", "num_workers"): daemon["schedules"]["numWorkers"],
        ("telemetry", "enabled"): values["telemetry"]["enabled"],
    }
    for path, value in rendered.items():
        expected: Any = instance
        for key in path:
            expected = expected[key]
        assert value == expected, f"{'.'.join(path)}: values.yaml {value!r}, deploy/postgres/dagster.yaml {expected!r}"
    assert daemon["runMonitoring"]["startTimeoutSeconds"] >= instance["run_monitoring"]["start_timeout_seconds"]


# --- consistency between the files ------------------------------------------------------------


def test_every_pod_gets_the_same_secret_and_config() -> None:
    values = _values()
    for source in (_code_location(values), _run_launcher(values)):
        assert [ref["name"] for ref in source["envSecrets"]] == [SECRET_NAME]
        assert [ref["name"] for ref in source["envConfigMaps"]] == [CONFIG_NAME]
    env_from = _api_container()["envFrom"]
    assert {"secretRef": {"name": SECRET_NAME}} in env_from
    assert {"configMapRef": {"name": CONFIG_NAME}} in env_from
    # Run pods are configured in one place (the run launcher), whoever submitted the run.
    assert _code_location(values)["includeConfigInLaunchedRuns"] == {"enabled": False}

    example = _k8s_object("Secret", SECRET_NAME)
    assert set(example["stringData"]) == SECRET_KEYS
    assert all("REPLACE_ME" in value for value in example["stringData"].values()), "placeholders only"
    assert example["stringData"]["MATCHING_DATABASE_URL"].startswith("postgresql+psycopg2://")

    postgres_secret = values["global"]["postgresqlSecretName"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresql-password" in _k8s_object("Secret", postgres_secret)["stringData"]
    (password,) = [env for env in _api_container()["env"] if env["name"] == "DAGSTER_PG_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": postgres_secret, "key": "postgresql-password"}


def test_one_image_everywhere() -> None:
    values = _values()
    images = {
        f"{image['repository']}:{image['tag']}"
        for image in (_code_location(values)["image"], _run_launcher(values)["image"])
    }
    images.add(_api_container()["image"])
    assert len(images) == 1, images
    # The chart renders the run pods' pull policy from imagePullPolicy, not from image.pullPolicy.
    launcher = _run_launcher(values)
    assert (
        launcher["imagePullPolicy"] == launcher["image"]["pullPolicy"] == _code_location(values)["image"]["pullPolicy"]
    )


def test_code_location_serves_the_package_module() -> None:
    deployment = _code_location(_values())
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["codeServerArgs"] == ["-m", module]


def test_every_configmap_setting_is_a_setting_and_none_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A renamed or removed setting cannot linger in the ConfigMap, read by nothing."""
    data = _k8s_object("ConfigMap", CONFIG_NAME)["data"]
    settings_variables = {env_name(name) for name in Settings.model_fields}
    stale = sorted(key for key in data if key.startswith(ENV_PREFIX) and key not in settings_variables)
    assert not stale, f"deploy/k8s/config.yaml sets {stale}, which no Settings field reads"
    assert not set(data) & set(SECRET_VARIABLES), "secrets (and URLs that may carry one) belong in the Secret"
    assert {"MATCHING_DATA_DIR", "MATCHING_INDEX_URL", "MATCHING_INBOX_URL", "MATCHING_PARTITION_RETENTION_DAYS"} <= set(data)
    # The values are valid settings too: the pods would otherwise fail to load the definitions.
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.index_url == data["MATCHING_INDEX_URL"] and settings.inbox_url == data["MATCHING_INBOX_URL"]
    assert settings.partition_retention_days == int(data["MATCHING_PARTITION_RETENTION_DAYS"])


def test_run_pod_resources_cover_the_measured_peak() -> None:
    values = _values()
    resources_ = _run_launcher(values)["resources"]
    requested = _quantity(resources_["requests"]["memory"])
    limit = _quantity(resources_["limits"]["memory"])
    assert requested >= MEASURED_STAGE_PEAK_BYTES + MEASURED_DEFINITIONS_PROCESS_BYTES
    assert limit >= requested
    assert _quantity(resources_["limits"]["cpu"]) >= _quantity(resources_["requests"]["cpu"]) >= 1
    for container_resources in (_code_location(values)["resources"], _api_container()["resources"]):
        requested = _quantity(container_resources["requests"]["memory"])
        assert _quantity(container_resources["limits"]["memory"]) >= requested > MEASURED_DEFINITIONS_PROCESS_BYTES


# --- the API's own manifests against the Kubernetes schemas ----------------------------------------


@pytest.mark.parametrize("name,document", _k8s_documents(), ids=[name for name, _ in _k8s_documents()])
def test_manifest_matches_kubernetes_schema(name: str, document: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.30"


def test_kubernetes_validation_rejects_unknown_fields() -> None:
    deployment = copy.deepcopy(_k8s_object("Deployment", "matching-pipeline-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 8000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_api_serves_where_its_probes_and_service_look() -> None:
    container = _api_container()
    args = container["args"]
    assert args[:2] == ["matching-pipeline", "api"]
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # The API's public health route (tests/test_api.py checks it answers without the token).
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": declared["name"]}
    service = _k8s_object("Service", "matching-pipeline-api")
    assert service["spec"]["ports"][0]["targetPort"] == declared["name"]
    deployment = _k8s_object("Deployment", "matching-pipeline-api")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # The chart's instance ConfigMap and service account of a release named `dagster`.
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dagster"
    assert pod["volumes"] == [{"name": "dagster-instance", "configMap": {"name": "dagster-instance"}}]


def test_api_command_exists() -> None:
    """The API's args name a real subcommand and options of the installed console script."""
    script = Path(sys.executable).with_name("matching-pipeline")
    out = subprocess.run([str(script), "api", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "--host" in out.stdout and "--port" in out.stdout


# --- the image ----------------------------------------------------------------------------------


def _dockerfile_instructions() -> Iterator[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            yield keyword.upper(), rest.strip()


def test_dockerfile_installs_from_the_lock_file_and_runs_the_code_server_as_non_root() -> None:
    instructions = list(_dockerfile_instructions())
    keywords = [keyword for keyword, _ in instructions]
    (base,) = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", base), base
    assert any(keyword == "COPY" and "requirements.lock" in rest for keyword, rest in instructions)
    installs = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert installs and all("-c requirements.lock" in rest for rest in installs)

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert keywords.index("USER") > max(i for i, (k, r) in enumerate(instructions) if k == "RUN")

    # The chart and the run launcher set the container's args: an ENTRYPOINT would prefix them.
    assert "ENTRYPOINT" not in keywords
    (cmd,) = [json.loads(rest) for keyword, rest in instructions if keyword == "CMD"]
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    port = str(_code_location(_values())["port"])
    assert cmd == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", port, "-m", module]


def test_code_server_command_is_dagsters() -> None:
    """The CMD's flags exist in the installed Dagster's `code-server start`."""
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run([str(dagster), "code-server", "start", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for flag in ("--host", "--port", "--module-name"):
        assert flag in out.stdout


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    ignored = {line for line in lines if line and not line.startswith("#")}
    assert {".venv", "data", ".dagster_home", ".git"} <= ignored
    copied = {
        part
        for keyword, rest in _dockerfile_instructions()
        if keyword == "COPY"
        for part in shlex.split(rest)[:-1]
    }
    assert copied == {"pyproject.toml", "requirements.lock", "README.md", "matching_pipeline"}
    assert not copied & ignored
