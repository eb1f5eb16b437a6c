"""The compose stack (docker-compose.yaml, Dockerfile, docker/): its structure, checked without an engine.

The file is read with `yaml.safe_load`, which resolves the anchors and merge keys the way
compose does; `${VAR:-default}` is then interpolated with the defaults, as on a machine
with no .env file.
"""

from __future__ import annotations

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

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SCRIPT = ROOT / "docker" / "airflow-init.sh"

AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
    "airflow-cli",
    "flower",
]
# Started by `docker compose up` and kept running: each must report its health.
LONG_RUNNING = [
    "postgres",
    "redis",
    "couchdb",
    "salesforce-emulator",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "flower",
]
# The Airflow services that run after airflow-init (not the one-shot init or CLI).
COMPONENTS = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"]

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's interpolation with every variable unset: `${X:-d}` -> d, `${X}` -> '', `$$` -> `$`."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value).replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return interpolate(raw["services"])


@pytest.fixture(scope="module")
def common_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return services["airflow-scheduler"]["environment"]


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text(encoding="utf-8"))
    return doc["airflow"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of the short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


def _connection(env: dict[str, str], conn_id: str) -> dict[str, Any]:
    return json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])


def _requirement_pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(rf"^{re.escape(name)}==([\w.]+)\s*$", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned with == in requirements.txt")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


# --- the file itself ------------------------------------------------------------------------


def test_anchors_resolve_so_every_airflow_service_has_an_image_and_environment(raw: dict[str, Any]) -> None:
    assert "x-airflow-common" in raw and "environment" in raw["x-airflow-common"]
    for name in AIRFLOW_SERVICES:
        service = raw["services"][name]
        assert service.get("image") and service.get("environment"), f"{name}: the common anchor did not merge"


def test_the_stack_has_every_service_of_the_design(services: dict[str, dict[str, Any]]) -> None:
    required = {"postgres", "redis", "couchdb", "salesforce-emulator", *AIRFLOW_SERVICES}
    assert required <= set(services), f"missing: {sorted(required - set(services))}"
    assert services["couchdb"]["image"].split(":") == ["couchdb", "3"]


# --- one image, one configuration -----------------------------------------------------------


def test_every_airflow_service_and_the_emulator_run_the_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    images = {name: services[name]["image"] for name in [*AIRFLOW_SERVICES, "salesforce-emulator"]}
    assert len(set(images.values())) == 1, images
    for name in [*AIRFLOW_SERVICES, "salesforce-emulator"]:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_every_airflow_service_shares_the_common_environment(services: dict[str, dict[str, Any]], common_env) -> None:
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        # Services may add variables (the worker's concurrency, init's admin) but never change one.
        differing = {k for k in common_env if k != "_PIP_ADDITIONAL_REQUIREMENTS" and env.get(k) != common_env[k]}
        assert not differing, f"{name} changes {sorted(differing)}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_celery_broker_is_redis_db_0_and_the_stage_uses_another_db(common_env: dict[str, str]) -> None:
    broker = urlsplit(common_env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port or 6379, broker.path) == ("redis", "redis", 6379, "/0")
    staging = _connection(common_env, "dms_staging")
    assert staging["conn_type"] == "redis"
    assert (staging["host"], int(staging.get("port", 6379))) == ("redis", 6379)
    assert int(staging["extra"]["db"]) != 0


def test_metadata_db_and_result_backend_are_the_postgres_service(common_env: dict[str, str]) -> None:
    assert urlsplit(common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert common_env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert urlsplit(common_env["AIRFLOW__CELERY__RESULT_BACKEND"]).hostname == "postgres"


def test_airflow_3_settings_execution_api_jwt_secret_and_simple_auth_manager(
    services: dict[str, dict[str, Any]], common_env: dict[str, str]
) -> None:
    execution = urlsplit(common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution.hostname == "airflow-apiserver" and execution.path == "/execution/"
    published = [p.split(":")[-1] for p in services["airflow-apiserver"]["ports"]]
    assert str(execution.port) in published
    # Without one shared secret each component makes its own, and workers' task tokens fail.
    assert common_env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert common_env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")
    user = common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert user.endswith(":admin")
    init_env = services["airflow-init"]["environment"]
    assert user.split(":")[0] == init_env["_AIRFLOW_WWW_USER_USERNAME"] and init_env["_AIRFLOW_WWW_USER_PASSWORD"]
    # The password file that airflow-init writes must be on a volume the api-server sees.
    password_dir = str(Path(common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent)
    for name in ("airflow-init", "airflow-apiserver"):
        assert password_dir in _mounts(services[name]), name


# --- start order and health ------------------------------------------------------------------


def test_airflow_services_wait_for_healthy_postgres_and_redis(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        for dependency in ("postgres", "redis"):
            assert depends[dependency]["condition"] == "service_healthy", f"{name} -> {dependency}"


def test_components_start_only_after_airflow_init_succeeded(services: dict[str, dict[str, Any]]) -> None:
    for name in [*COMPONENTS, "flower"]:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name


def test_worker_waits_for_the_audit_store_the_emulator_and_the_api_server(
    services: dict[str, dict[str, Any]],
) -> None:
    depends = services["airflow-worker"]["depends_on"]
    for dependency in ("couchdb", "salesforce-emulator", "airflow-apiserver"):
        assert depends[dependency]["condition"] == "service_healthy", dependency
    # Deferred loads poll Salesforce from the triggerer.
    assert services["airflow-triggerer"]["depends_on"]["salesforce-emulator"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    test = services[name].get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: {test!r}"


def test_couchdb_health_is_its_up_endpoint_and_it_has_an_admin(services: dict[str, dict[str, Any]]) -> None:
    couchdb = services["couchdb"]
    probe = " ".join(couchdb["healthcheck"]["test"])
    assert "GET /_up " in probe and "/5984" in probe and "' 200 '" in probe
    # The couchdb image purges curl during its build: a curl probe would never turn healthy.
    assert "curl" not in probe
    # CouchDB 3 refuses to start without an admin ("Admin Party" is gone).
    assert couchdb["environment"]["COUCHDB_USER"] and couchdb["environment"]["COUCHDB_PASSWORD"]


# --- code and data in the containers ---------------------------------------------------------


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_dags_plugins_include_and_scripts_are_mounted_and_dms_importable(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    mounts = _mounts(services[name])
    for folder in ("dags", "plugins", "include", "scripts", "logs"):
        target = f"/opt/airflow/{folder}"
        assert target in mounts, f"{name} does not mount {folder}/"
        source = (ROOT / mounts[target][0]).resolve()
        assert source == ROOT / folder, f"{name}: {target} comes from {source}"
    assert (ROOT / "plugins" / "dms" / "__init__.py").exists()
    assert "/opt/airflow/plugins" in services[name]["environment"]["PYTHONPATH"].split(":")
    # airflow_settings.py finds its file beside scripts/.
    assert mounts["/opt/airflow/airflow_settings.yaml"][0] == "./airflow_settings.yaml"


def test_flower_runs_only_under_the_flower_profile_and_the_cli_under_debug(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["flower"]["profiles"] == ["flower"]
    assert services["airflow-cli"]["profiles"] == ["debug"]
    others = {n: s["profiles"] for n, s in services.items() if n not in ("flower", "airflow-cli") and "profiles" in s}
    assert others == {}, "a core service would not start with a plain `docker compose up`"


# --- connections -----------------------------------------------------------------------------


def test_compose_connections_have_the_ids_and_types_of_airflow_settings(
    common_env: dict[str, str], settings: dict[str, Any]
) -> None:
    in_compose = {k.removeprefix("AIRFLOW_CONN_").lower() for k in common_env if k.startswith("AIRFLOW_CONN_")}
    assert in_compose == {c["conn_id"] for c in settings["connections"]}
    for conn in settings["connections"]:
        ours = _connection(common_env, conn["conn_id"])
        assert ours["conn_type"] == conn["conn_type"], conn["conn_id"]
        # Same extras (token URL, OAuth client, API version, db): only hosts change for compose.
        assert set(ours.get("extra", {})) == set(conn.get("conn_extra") or {}), conn["conn_id"]


def test_salesforce_connection_logs_in_at_the_emulator_service(
    services: dict[str, dict[str, Any]], common_env: dict[str, str], settings: dict[str, Any]
) -> None:
    local = next(c for c in settings["connections"] if c["conn_id"] == "salesforce_default")
    sf = _connection(common_env, "salesforce_default")
    assert (sf["login"], sf["password"]) == (local["conn_login"], local["conn_password"])
    for key in ("consumer_key", "consumer_secret", "version"):
        assert sf["extra"][key] == local["conn_extra"][key], key
    token_url = urlsplit(sf["extra"]["token_url"])
    command = _command(services["salesforce-emulator"])
    port = command[command.index("--port") + 1]
    assert (token_url.scheme, token_url.hostname, str(token_url.port)) == ("https", "salesforce-emulator", port)
    assert token_url.path == "/services/oauth2/token"
    # The provider hook's login URL: https://{domain}.salesforce.com with the suffix as a fragment.
    assert sf["extra"]["domain"] == f"{token_url.netloc}{token_url.path}#"


def test_cloudant_connection_is_the_couchdb_service_with_its_admin(
    services: dict[str, dict[str, Any]], common_env: dict[str, str]
) -> None:
    cloudant = _connection(common_env, "cloudant_default")
    assert urlsplit(cloudant["host"])[:2] == ("http", "couchdb:5984")
    couchdb_env = services["couchdb"]["environment"]
    assert (cloudant["login"], cloudant["password"]) == (couchdb_env["COUCHDB_USER"], couchdb_env["COUCHDB_PASSWORD"])


# --- the emulator ----------------------------------------------------------------------------


def test_emulator_command_is_accepted_by_its_cli_and_its_certificate_names_the_service(
    services: dict[str, dict[str, Any]], common_env: dict[str, str]
) -> None:
    from salesforce_emulator.__main__ import _parser

    command = _command(services["salesforce-emulator"])
    assert command[:3] == ["python", "-m", "salesforce_emulator"]
    try:
        args = _parser().parse_args(command[3:])
    except SystemExit as exc:  # argparse exits on an unknown flag
        pytest.fail(f"salesforce_emulator rejects the compose command {command[3:]}: exit {exc.code}")
    assert args.host == "0.0.0.0"
    assert "salesforce-emulator" in args.tls_host
    # The org schema, the CA the Airflow services trust and the record store are all on volumes.
    emulator_mounts = _mounts(services["salesforce-emulator"])
    assert Path(args.org).is_relative_to("/opt/airflow/include") and "/opt/airflow/include" in emulator_mounts
    assert (ROOT / Path(args.org).relative_to("/opt/airflow")).exists()
    assert str(Path(args.db).parent) in emulator_mounts
    assert common_env["REQUESTS_CA_BUNDLE"] == f"{args.cert_dir}/ca.pem"
    cert_volume, mode = emulator_mounts[args.cert_dir]
    assert mode == "rw"
    for name in AIRFLOW_SERVICES:
        assert _mounts(services[name])[args.cert_dir] == (cert_volume, "ro"), name


def test_emulator_healthcheck_reaches_it_by_service_name_over_verified_tls(
    services: dict[str, dict[str, Any]], common_env: dict[str, str]
) -> None:
    test = services["salesforce-emulator"]["healthcheck"]["test"]
    assert "https://salesforce-emulator:8443/__emulator/health" in test
    assert test[test.index("--cacert") + 1] == common_env["REQUESTS_CA_BUNDLE"]
    assert "--insecure" not in test and "-k" not in test


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_from_tag_matches_the_airflow_pin_and_python_version() -> None:
    froms = [args for instruction, args in _dockerfile_instructions() if instruction == "FROM"]
    assert len(froms) == 1
    match = re.fullmatch(r"apache/airflow:([\w.]+)-python(3\.\d+)", froms[0])
    assert match, froms[0]
    assert match.group(1) == _requirement_pin("apache-airflow")
    # The project's Python (pyproject's ruff target, e.g. py311), so the image runs what CI tests.
    target = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["target-version"]
    assert match.group(2) == f"{target[2]}.{target[3:]}"


def test_dockerfile_installs_requirements_txt_keeping_the_image_airflow_version() -> None:
    instructions = _dockerfile_instructions()
    copied = [args for instruction, args in instructions if instruction == "COPY" and "requirements.txt" in args]
    assert copied, "requirements.txt is never copied into the image"
    destination = copied[0].split()[-1]
    runs = [args for instruction, args in instructions if instruction == "RUN" and "pip install" in args]
    assert any(
        f"-r {destination}" in run and '"apache-airflow==${AIRFLOW_VERSION}"' in run and "--no-cache-dir" in run
        for run in runs
    ), runs


def test_dockerfile_copies_what_the_compose_commands_run() -> None:
    copies = {
        args.split()[-1].rstrip("/"): args.split()[-2].rstrip("/")
        for instruction, args in _dockerfile_instructions()
        if instruction == "COPY"
    }
    assert copies.get("/opt/airflow/salesforce_emulator") == "salesforce_emulator"
    assert copies.get("/opt/airflow/docker") == "docker"
    assert (ROOT / "salesforce_emulator" / "__main__.py").exists()


def test_dockerignore_keeps_local_environments_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", "node_modules", ".run", ".git"} <= ignored
    assert not ignored & {"salesforce_emulator", "docker", "requirements.txt", "plugins", "scripts"}


# --- airflow-init ----------------------------------------------------------------------------


def test_airflow_init_runs_the_init_script_as_root(services: dict[str, dict[str, Any]]) -> None:
    init = services["airflow-init"]
    assert init["user"] == "0:0"
    assert _command(init) == ["/opt/airflow/docker/airflow-init.sh"]
    assert "restart" not in init, "a one-shot service must not be restarted"


def test_init_script_is_valid_bash_that_migrates_and_applies_the_settings() -> None:
    bash = shutil.which("bash")
    assert bash
    result = subprocess.run([bash, "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in INIT_SCRIPT.read_text(encoding="utf-8").splitlines()]
    assert "set -euo pipefail" in lines
    assert "/entrypoint airflow db migrate" in lines
    assert "python /opt/airflow/scripts/airflow_settings.py apply --no-connections" in lines


def test_apply_settings_sets_pools_and_variables_but_not_the_local_connections(tmp_path: Path) -> None:
    settings = tmp_path / "airflow_settings.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "airflow": {
                    "connections": [{"conn_id": "salesforce_default", "conn_type": "salesforce"}],
                    "pools": [{"pool_name": "salesforce_api", "pool_slot": 4, "pool_description": "API calls"}],
                    "variables": [{"variable_name": "dms_env", "variable_value": "compose"}],
                }
            }
        )
    )
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "airflow"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "AIRFLOW_CONN_SALESFORCE_DEFAULT": "{}"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "airflow_settings.py"),
            "apply",
            "--no-connections",
            "--settings",
            str(settings),
            "--airflow",
            str(fake),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        ["pools", "set", "salesforce_api", "4", "API calls"],
        ["variables", "set", "dms_env", "compose"],
    ]
    assert "WARNING" not in result.stderr


def test_apply_settings_warns_about_a_connection_compose_does_not_set(tmp_path: Path) -> None:
    settings = tmp_path / "airflow_settings.yaml"
    settings.write_text(
        yaml.safe_dump({"airflow": {"connections": [{"conn_id": "legacy_db", "conn_type": "postgres"}]}})
    )
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_CONN_LEGACY_DB"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "airflow_settings.py"),
            "apply",
            "--no-connections",
            "--settings",
            str(settings),
            "--airflow",
            "false",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "'legacy_db'" in result.stderr and "AIRFLOW_CONN_LEGACY_DB" in result.stderr


# --- docker compose itself -------------------------------------------------------------------


def _compose_command() -> list[str]:
    """`docker compose` (the v2 plugin), else a standalone `docker-compose`; skip when neither exists."""
    docker = shutil.which("docker")
    reason = "no docker CLI on this machine"
    if docker is not None:
        version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if version.returncode == 0:
            return [docker, "compose"]
        reason = f"the docker CLI has no compose plugin ({(version.stderr or version.stdout).strip()[:120]})"
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    pytest.skip(f"{reason}, and no standalone docker-compose either")


def test_docker_compose_config_accepts_the_file() -> None:
    # `config` validates against the Compose schema and interpolates; it needs no engine.
    base = [*_compose_command(), "-f", str(COMPOSE), "--profile", "flower", "--profile", "debug"]
    result = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = subprocess.run([*base, "config", "--services"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= {"postgres", "redis", "couchdb", "salesforce-emulator", *AIRFLOW_SERVICES}
