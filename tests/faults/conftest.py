"""The fault tests run DMS DAGs against the same real services as the integration tests."""

from __future__ import annotations

from tests.integration import conftest as integration

# The integration suite's fixtures, by name (pytest finds fixtures in conftest modules only).
redis_server = integration.redis_server
airflow_db = integration.airflow_db
dms_connections = integration.dms_connections
