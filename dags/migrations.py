"""One DMS migration DAG per YAML spec in include/migrations/ (Airflow finds them through this file).

Specs kept elsewhere (another repository, a mounted volume) are added by listing their
directories in DMS_SPEC_PATH, separated like PATH. Parsing reads the specs and nothing else:
no connections, Variables, network or pandas.
"""

from __future__ import annotations

import os
from pathlib import Path

from dms.dag_factory import build_dags

SPEC_DIR = Path(__file__).resolve().parents[1] / "include" / "migrations"
EXTRA_DIRS = [Path(d) for d in os.environ.get("DMS_SPEC_PATH", "").split(os.pathsep) if d]

globals().update(build_dags(SPEC_DIR, *EXTRA_DIRS))
