"""Imported once by bench_scale.py's fork server: what the tasks import, loaded before any clock starts.

A real task process is forked from Airflow's supervisor, which has Airflow loaded; the
libraries the operators import inside execute() are loaded here too, as bench_pipeline.py
loads them before its clock, so that every task's time is its work and not its imports.
"""

from __future__ import annotations

import airflow.sdk.execution_time.supervisor  # noqa: F401
import pandas  # noqa: F401
import pyarrow  # noqa: F401
import pyarrow.csv  # noqa: F401
import simple_salesforce  # noqa: F401
from airflow.providers.salesforce.operators.bulk import SalesforceBulkOperator  # noqa: F401
from airflow.sdk.serde import serialize  # noqa: F401

import dms.audit  # noqa: F401
import dms.hooks.cloudant  # noqa: F401
import dms.hooks.redis  # noqa: F401
import dms.hooks.salesforce  # noqa: F401
import dms.row_results  # noqa: F401
import dms.salesforce.bulk2  # noqa: F401
import dms.sources.csv  # noqa: F401
from dms.operators.extract import ExtractOperator  # noqa: F401
from dms.operators.load import LoadOperator  # noqa: F401
from dms.operators.reconcile import ReconcileOperator  # noqa: F401
from dms.operators.transform import TransformOperator  # noqa: F401
from dms.transform import describe_subset, transform_chunk  # noqa: F401
