"""Apply airflow_settings.yaml (the Astro CLI format) to a plain Airflow.

`as_env()` turns its connections and variables into AIRFLOW_CONN_* / AIRFLOW_VAR_* values,
which `airflow dags test` and a standalone Airflow read without touching the metadata DB;
`apply()` writes them into the metadata DB with the airflow CLI, pools included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "airflow_settings.yaml"

_FIELDS = {
    "conn_host": "host",
    "conn_login": "login",
    "conn_password": "password",
    "conn_port": "port",
    "conn_schema": "schema",
    "conn_extra": "extra",
    "conn_type": "conn_type",
}


def load(path: Path = SETTINGS) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    section = doc.get("airflow") or {}
    return {
        "connections": section.get("connections") or [],
        "pools": section.get("pools") or [],
        "variables": section.get("variables") or [],
    }


def connection_json(spec: dict[str, Any]) -> str:
    """One connection in the JSON form of AIRFLOW_CONN_<ID>."""
    body = {_FIELDS[k]: v for k, v in spec.items() if k in _FIELDS and v not in (None, "")}
    return json.dumps(body)


def as_env(path: Path = SETTINGS) -> dict[str, str]:
    settings = load(path)
    env = {f"AIRFLOW_CONN_{c['conn_id'].upper()}": connection_json(c) for c in settings["connections"]}
    for var in settings["variables"]:
        env[f"AIRFLOW_VAR_{var['variable_name'].upper()}"] = str(var["variable_value"])
    return env


def apply_pools(path: Path = SETTINGS, airflow: str = "airflow", env: dict[str, str] | None = None) -> None:
    """Create or resize the file's pools (a task in a pool that does not exist is never scheduled)."""
    for pool in load(path)["pools"]:
        subprocess.run(
            [airflow, "pools", "set", pool["pool_name"], str(pool["pool_slot"]), pool.get("pool_description") or ""],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )


def apply(path: Path = SETTINGS, airflow: str = "airflow", *, connections: bool = True) -> None:
    """Write the settings into the metadata DB through the airflow CLI.

    With `connections=False` (the compose stack, whose AIRFLOW_CONN_* variables name the
    services) only pools and variables are written, and a connection of the file that the
    environment does not provide is reported, since tasks using it would fail.
    """
    settings = load(path)
    if connections:
        for conn in settings["connections"]:
            subprocess.run([airflow, "connections", "delete", conn["conn_id"]], capture_output=True, check=False)
            subprocess.run(
                [airflow, "connections", "add", conn["conn_id"], "--conn-json", connection_json(conn)], check=True
            )
    else:
        for conn in settings["connections"]:
            if f"AIRFLOW_CONN_{conn['conn_id'].upper()}" not in os.environ:
                print(
                    f"WARNING: connection {conn['conn_id']!r} of {path.name} has no "
                    f"AIRFLOW_CONN_{conn['conn_id'].upper()} in the environment; tasks that use it will fail",
                    file=sys.stderr,
                )
    apply_pools(path, airflow)
    for var in settings["variables"]:
        subprocess.run([airflow, "variables", "set", var["variable_name"], str(var["variable_value"])], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["env", "apply"], nargs="?", default="env")
    parser.add_argument("--settings", type=Path, default=SETTINGS)
    parser.add_argument("--airflow", default=shutil.which("airflow") or str(Path(sys.executable).with_name("airflow")))
    parser.add_argument("--no-connections", action="store_true", help="apply pools and variables only")
    args = parser.parse_args(argv)
    if args.command == "apply":
        apply(args.settings, args.airflow, connections=not args.no_connections)
    else:
        for key, value in as_env(args.settings).items():
            print(f"export {key}='{value}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
