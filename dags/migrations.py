"""One DMS migration DAG per YAML spec in include/migrations/ (Airflow finds them through this file).

Parsing reads the specs and nothing else: no connections, Variables, network or pandas.
"""

from __future__ import annotations

from pathlib import Path

from dms.dag_factory import build_dags

SPEC_DIR = Path(__file__).resolve().parents[1] / "include" / "migrations"

globals().update(build_dags(SPEC_DIR))
