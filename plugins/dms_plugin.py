"""Registers the DMS plugin (the Migrations page) with Airflow.

Airflow imports every .py file of the plugins folder as a top-level module while it looks
for AirflowPlugin classes. plugins/.airflowignore keeps that scan out of dms/ (its files
would shadow redis, csv and others), so this one file outside it brings the plugin in; the
plugin itself lives in the dms package, at dms/plugin.py. Airflow puts the plugins folder on
sys.path, so `dms` imports here as it does everywhere else.
"""

from __future__ import annotations

from dms.plugin import DmsPlugin

__all__ = ["DmsPlugin"]
