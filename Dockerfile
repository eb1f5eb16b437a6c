# The DMS image: Airflow with the project's pinned requirements, and the Salesforce emulator.
# docker-compose.yaml builds it once and runs every Airflow service and the emulator from it.
# Keep the tag equal to the apache-airflow pin in requirements.txt (tests/dags/test_compose.py).
FROM apache/airflow:3.3.2-python3.11

# mysqlclient (the MySQL source) builds from source when its pin differs from the image's
# own copy: the compiler and the MariaDB client headers, installed as root the image's way.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libmariadb-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
USER airflow

# The image's recommended way to add dependencies: as the airflow user, into the image's
# virtualenv, with apache-airflow pinned to the image's own version so pip can never swap it.
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

# Mount points of the named volumes: a new volume takes this owner and mode, so the services
# (any AIRFLOW_UID, always group 0) can write the emulator's certificates and records and the
# simple auth manager's password file.
RUN mkdir -p /opt/airflow/certs /opt/airflow/emulator /opt/airflow/auth \
 && chmod 0775 /opt/airflow/certs /opt/airflow/emulator /opt/airflow/auth

# The emulator runs from this image (`python -m salesforce_emulator`, working dir /opt/airflow).
COPY --chown=airflow:0 salesforce_emulator/ /opt/airflow/salesforce_emulator/
# airflow-init's helpers, and what compose also mounts (the image runs without the mounts too).
COPY --chown=airflow:0 docker/ /opt/airflow/docker/
COPY --chown=airflow:0 scripts/ /opt/airflow/scripts/
COPY --chown=airflow:0 airflow_settings.yaml /opt/airflow/airflow_settings.yaml
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/

ENV PYTHONPATH=/opt/airflow/plugins
