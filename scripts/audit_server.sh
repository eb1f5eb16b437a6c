#!/usr/bin/env bash
# The local audit store (pouchdb-server, a CouchDB-compatible server from npm) in the
# background, for the demo and the Makefile. Tests use scripts/audit_server.py instead.
#
#   scripts/audit_server.sh start [PORT] [DATA_DIR]   default 5984 and .run/audit
#   scripts/audit_server.sh run [PORT] [DATA_DIR]     in the foreground, until Ctrl-C
#   scripts/audit_server.sh stop
#   scripts/audit_server.sh status
#
# It runs without an admin on 127.0.0.1 only: clients connect with no credentials
# (NoAuthAuthenticator). ibmcloudant's session login does not work against pouchdb-server,
# and once an admin exists an anonymous PUT /db crashes it (see ../shared/FACTS.md).
# The PID goes to .run/audit_server.pid, which `make down` also stops.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PID_FILE=$ROOT/.run/audit_server.pid
SERVER_BIN=$ROOT/node_modules/pouchdb-server/bin/pouchdb-server
STAMP=$ROOT/node_modules/.dms-installed

ensure_node_modules() {
    command -v node >/dev/null && command -v npm >/dev/null \
        || { echo "node and npm are needed for the audit server; install Node 18+" >&2; exit 1; }
    # The lock file is also the mutex, shared with scripts/audit_server.py.
    exec 9<"$ROOT/package-lock.json"
    flock 9
    local digest
    digest=$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)
    if [[ ! -e $SERVER_BIN || "$(cat "$STAMP" 2>/dev/null)" != "$digest" ]]; then
        npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error
        echo "$digest" >"$STAMP"
    fi
    flock -u 9
}

running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(cat "$PID_FILE")
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
    local port=${1:-5984} data_dir=${2:-$ROOT/.run/audit}
    if pid=$(running_pid); then
        echo "audit server already running (pid $pid)"
        return 0
    fi
    ensure_node_modules
    mkdir -p "$data_dir" "$(dirname "$PID_FILE")"
    data_dir=$(cd "$data_dir" && pwd)
    local log=$data_dir/server.log
    local offset
    offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
    # cwd is the data dir: pouchdb-server writes its log.txt there, not in the work tree.
    (cd "$data_dir" && exec node "$SERVER_BIN" --host 127.0.0.1 --port "$port" \
        --config "$data_dir/config.json" --dir "$data_dir" --no-color </dev/null >>"$log" 2>&1) &
    local pid=$!
    echo "$pid" >"$PID_FILE"
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "audit server exited; log tail:" >&2
            tail -c 3000 "$log" >&2
            rm -f "$PID_FILE"
            return 1
        fi
        if tail -c +"$((offset + 1))" "$log" | grep -q "has started on http://127.0.0.1:$port/"; then
            echo "audit server at http://127.0.0.1:$port (pid $pid, data in $data_dir)"
            return 0
        fi
        sleep 0.1
    done
    echo "audit server did not start within 30 s; log tail:" >&2
    tail -c 3000 "$log" >&2
    stop
    return 1
}

run() {
    local port=${1:-5984} data_dir=${2:-$ROOT/.run/audit}
    ensure_node_modules
    mkdir -p "$data_dir"
    data_dir=$(cd "$data_dir" && pwd)
    cd "$data_dir"
    exec node "$SERVER_BIN" --host 127.0.0.1 --port "$port" --config "$data_dir/config.json" --dir "$data_dir" --no-color
}

stop() {
    local pid
    if pid=$(running_pid); then
        kill "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "stopped audit server ($pid)"
    fi
    rm -f "$PID_FILE"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    run) shift; run "$@" ;;
    stop) stop ;;
    status) if pid=$(running_pid); then echo "running (pid $pid)"; else echo "not running"; exit 3; fi ;;
    *) echo "usage: $0 start|run [PORT] [DATA_DIR] | stop | status" >&2; exit 2 ;;
esac
