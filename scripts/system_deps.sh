#!/usr/bin/env bash
# The system programs the local stack runs: redis-server (when no Redis answers on :6379),
# PostgreSQL (when none answers on :5432), MariaDB (when none answers on :3306) and Node.js
# with npm (the audit store, pouchdb-server), Chromium with chromedriver for the browser
# tests, and what pip needs to build mysqlclient (the MySQL provider's client). On a machine that lacks them,
# install them from Debian's packages when we can (root with apt-get); otherwise say what
# is missing and stop, rather than failing later with a less clear error.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# Headless Chromium and its WebDriver for the browser tests (tests/browser); Selenium is
# given both paths, so it never downloads a browser of its own.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# RabbitMQ (the Celery tests' second broker): only when none answers on :5672.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && ! command -v rabbitmq-server >/dev/null 2>&1 \
   && [ ! -x /usr/sbin/rabbitmq-server ]; then
  missing+=(rabbitmq-server)
fi
# PostgreSQL (the SQL source's tests and sample): only when none answers on :5432.
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null \
   && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# MariaDB (the SQL source's MySQL tests, ensure_mariadb in scripts/services.py): only when none answers on :3306.
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null \
   && ! command -v mariadbd >/dev/null 2>&1 && ! [ -x /usr/sbin/mariadbd ]; then
  missing+=(mariadb-server)
fi
# mysqlclient has no Linux wheel: pip builds it with a C compiler, pkg-config, the MariaDB
# client library's headers (its mysqlclient.pc or mariadb.pc) and Python's own headers.
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists mariadb 2>/dev/null || missing+=(libmariadb-dev)
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "dms: installing ${missing[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "dms: please install: ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
  exit 1
fi
