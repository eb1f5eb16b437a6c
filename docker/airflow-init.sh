#!/usr/bin/env bash
# airflow-init (docker-compose.yaml): runs once, as root, before the other Airflow services.
# Migrates the metadata DB, writes the admin's password for the simple auth manager, applies
# the pools and variables of airflow_settings.yaml, and hands ./logs to AIRFLOW_UID.
set -euo pipefail

if [[ -z "${AIRFLOW_UID:-}" ]]; then
  echo -e "\033[1;33mWARNING!!!: AIRFLOW_UID not set!\e[0m"
  echo "On Linux, put AIRFLOW_UID=\$(id -u) in .env beside docker-compose.yaml, or files in ./logs"
  echo "will belong to another user."
  export AIRFLOW_UID=50000
fi

one_meg=1048576
mem_available=$(($(getconf _PHYS_PAGES) * $(getconf PAGE_SIZE) / one_meg))
cpus_available=$(grep -cE 'cpu[0-9]+' /proc/stat)
if (( mem_available < 4000 )); then
  echo -e "\033[1;33mWARNING!!!: Not enough memory available for Docker.\e[0m"
  echo "At least 4GB of memory required. You have $(numfmt --to iec $((mem_available * one_meg)))"
fi
if (( cpus_available < 2 )); then
  echo -e "\033[1;33mWARNING!!!: Not enough CPUS available for Docker.\e[0m"
  echo "At least 2 CPUs recommended. You have ${cpus_available}"
fi

mkdir -p /opt/airflow/logs /opt/airflow/auth

echo "Airflow version:"
# The image's entrypoint waits for the metadata DB before it runs the command.
/entrypoint airflow version

echo "Migrating the metadata DB:"
# Run directly rather than through _AIRFLOW_DB_MIGRATE, whose `airflow db migrate || true`
# would let a failed migration pass and start the other services on a broken DB.
/entrypoint airflow db migrate

echo "Admin user for the simple auth manager: ${_AIRFLOW_WWW_USER_USERNAME}"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
# Other users listed in SIMPLE_AUTH_MANAGER_USERS keep the passwords Airflow generated for them.
passwords[os.environ["_AIRFLOW_WWW_USER_USERNAME"]] = os.environ["_AIRFLOW_WWW_USER_PASSWORD"]
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(passwords) + "\n")
PY
chmod 0660 "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"

echo "Pools and variables from airflow_settings.yaml:"
python /opt/airflow/scripts/airflow_settings.py apply --no-connections

echo "Change ownership of logs and auth files to ${AIRFLOW_UID}:0"
chown -R "${AIRFLOW_UID}:0" /opt/airflow/logs /opt/airflow/auth
