#!/usr/bin/env bash
# The system programs the local stack runs: redis-server (when no Redis answers on :6379),
# PostgreSQL (when none answers on :5432) and Node.js with npm (the audit store, pouchdb-server). On a machine that lacks them,
# install them from Debian's packages when we can (root with apt-get); otherwise say what
# is missing and stop, rather than failing later with a less clear error.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# PostgreSQL (the SQL source's tests and sample): only when none answers on :5432.
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null \
   && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "dms: installing ${missing[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "dms: please install: ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
  exit 1
fi
