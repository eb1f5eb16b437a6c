"""Start and stop the real services the tests use, on free ports, and always clean them up."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = {
    "username": "dms@example.com",
    "password": "dms-password",
    "client_id": "dms-local-client",
    "client_secret": "dms-local-secret",
}


def die_with_parent() -> None:
    """Run in a child before exec: the kernel sends it SIGTERM when the Python parent dies.

    A killed pytest or demo then leaves no server behind. Linux only; elsewhere the
    fixtures' and context managers' own stop calls are the guard.
    """
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmulatorProcess:
    """A running `python -m salesforce_emulator` and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    log_file: Path
    args: tuple[str, ...] = ()
    _session: requests.Session = field(default_factory=requests.Session)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def admin(self, path: str, method: str = "GET", json: Any = None) -> Any:
        resp = self._session.request(method, self.base_url + path, json=json, verify=str(self.ca_file), timeout=30)
        resp.raise_for_status()
        return resp.json()

    def token(self) -> dict[str, Any]:
        """An OAuth password-grant token, as the DMS hook obtains it."""
        resp = self._session.post(
            f"{self.base_url}/services/oauth2/token",
            data={"grant_type": "password", **CREDENTIALS},
            verify=str(self.ca_file),
            timeout=30,
        )
        resp.raise_for_status()
        return resp.json()

    def salesforce_connection(self) -> dict[str, Any]:
        """The DMS `salesforce_default` connection (OAuth at the token URL) for this emulator."""
        return {
            "conn_type": "salesforce",
            "login": CREDENTIALS["username"],
            "password": CREDENTIALS["password"],
            "extra": {
                "token_url": f"{self.base_url}/services/oauth2/token",
                "consumer_key": CREDENTIALS["client_id"],
                "consumer_secret": CREDENTIALS["client_secret"],
                "version": "62.0",
            },
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(
    org: Path, *, cert_dir: Path, extra_args: tuple[str, ...] = (), port: int | None = None
) -> EmulatorProcess:
    port = port or free_port()
    cert_dir.mkdir(parents=True, exist_ok=True)
    log_file = cert_dir / f"emulator-{port}.log"
    args = ("--org", str(org), "--port", str(port), "--cert-dir", str(cert_dir), *extra_args)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "salesforce_emulator", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent,  # only a prctl call: safe between fork and exec
        )
    proc = EmulatorProcess(process, port, cert_dir / "ca.pem", log_file, args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with {process.returncode}: {log_file.read_text()[-2000:]}")
        if proc.ca_file.exists():
            try:
                requests.get(f"{proc.base_url}/__emulator/health", verify=str(proc.ca_file), timeout=2)
                return proc
            except requests.RequestException:
                pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"the emulator did not answer within 60 s: {log_file.read_text()[-2000:]}")


@dataclass
class RedisServer:
    """A reachable Redis: the machine's own on :6379, or one started for this session."""

    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop this private server and start it again on the same port, empty (it keeps no data on disk).

        For fault tests: what a Redis without persistence looks like after a crash or a reboot.
        Never for the machine's own Redis, which this session did not start.
        """
        if self.process is None or self.workdir is None:
            raise RuntimeError(f"Redis on {self.host}:{self.port} was not started here; refusing to restart it")
        self.stop()
        self.process = start_redis(self.workdir, port=self.port).process


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start_redis(workdir: Path, port: int | None = None, name: str = "redis") -> RedisServer:
    """A private redis-server on 127.0.0.1 without persistence (no RDB, no AOF), on `port` or a free one.

    It logs to `<workdir>/<name>.log`.
    """
    port = port or free_port()
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - the server keeps writing to it
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=log,
        cwd=workdir,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _reachable("127.0.0.1", port):
            return RedisServer("127.0.0.1", port, process, workdir)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"could not start redis-server on port {port}: see {workdir / f'{name}.log'}")


def ensure_redis(workdir: Path) -> RedisServer:
    """Use the Redis on 127.0.0.1:6379 if it answers, else start a private one without persistence."""
    if _reachable("127.0.0.1", 6379):
        return RedisServer("127.0.0.1", 6379)
    return start_redis(workdir)


@dataclass
class PostgresServer:
    """A reachable PostgreSQL with trust auth for user postgres: the machine's own on :5432, or a private one."""

    host: str
    port: int
    data_dir: Path | None = None
    pg_ctl: str | None = None
    run_as: list[str] = field(default_factory=list)

    def admin(self, sql: str) -> None:
        """Run one statement as postgres in the postgres database, outside a transaction
        (CREATE/DROP DATABASE cannot run in one)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def stop(self) -> None:
        if self.data_dir is not None and self.pg_ctl is not None:
            subprocess.run(
                [*self.run_as, self.pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                check=False,
                capture_output=True,
            )
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the server programs out of PATH, one directory per major version.
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def ensure_postgres(*, private: bool = False) -> PostgresServer:
    """Use the PostgreSQL on 127.0.0.1:5432 if it answers, else initdb and start a private cluster.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
    (Debian's package creates it) and its programs run through `runuser`.
    """
    if not private and _reachable("127.0.0.1", 5432):
        return PostgresServer("127.0.0.1", 5432)
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError(
            "PostgreSQL is not running on :5432 and initdb/pg_ctl are not installed (apt-get install postgresql)"
        )
    run_as: list[str] = []
    # Its own directory directly under the temp root: the postgres user must be able to reach
    # it, which a private test directory (mode 0700, owned by root) would not allow.
    workdir = Path(tempfile.mkdtemp(prefix="dms-postgres-"))
    data_dir = workdir / "pgdata"
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        workdir.chmod(0o755)
        shutil.chown(workdir, "postgres")
    port = free_port()
    subprocess.run(
        [*run_as, initdb, "-D", str(data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    log = workdir / "postgres.log"
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            str(data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    return PostgresServer("127.0.0.1", port, data_dir, pg_ctl, run_as)


@dataclass
class MariaDBServer:
    """A reachable MariaDB (or MySQL) where `user` may create databases and users.

    The machine's own on :3306 (root with an empty password, as the machine image and
    Debian's test setups have it), or a private server in a temp directory of its own.
    """

    host: str
    port: int
    user: str = "root"
    password: str = ""
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGTERM is mariadbd's clean shutdown; it exits in a second or two when idle.
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _mariadb_binary(*names: str) -> str | None:
    for name in names:
        # Debian puts the server in /usr/sbin, which is not on every user's PATH.
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
        if found:
            return found
    return None


def ensure_mariadb(*, private: bool = False) -> MariaDBServer:
    """Use the MariaDB/MySQL on 127.0.0.1:3306 if it answers, else start a private MariaDB.

    The private server (Debian's mariadb-server package) gets a fresh data directory in a temp
    directory of its own, root without a password over TCP on a free port of 127.0.0.1, utf8mb4
    as its character set, and no config file of the machine's (--no-defaults: the machine's
    my.cnf would send it to port 3306 and /run/mysqld). mariadbd refuses to run as root, so as
    root it runs as the `mysql` user (the package creates it). stop() ends it and removes the
    directory; die_with_parent ends it if the Python process dies first.
    """
    if not private and _reachable("127.0.0.1", 3306):
        return MariaDBServer("127.0.0.1", 3306)
    mariadbd = _mariadb_binary("mariadbd", "mysqld")
    install_db = _mariadb_binary("mariadb-install-db", "mysql_install_db")
    if not (mariadbd and install_db):
        raise RuntimeError(
            "MariaDB is not running on :3306 and mariadbd/mariadb-install-db are not installed "
            "(apt-get install mariadb-server, or run scripts/system_deps.sh)"
        )
    # Its own directory directly under the temp root, owned by the user the server runs as.
    workdir = Path(tempfile.mkdtemp(prefix="dms-mariadb-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        # Popen switches user before preexec_fn runs, so the parent-death signal set there
        # survives (a switch inside mariadbd, with --user, would clear it).
        as_user = {"user": "mysql", "group": "mysql", "extra_groups": []}
        shutil.chown(workdir, "mysql", "mysql")
    data_dir, log = workdir / "data", workdir / "mariadb.log"
    try:
        with open(log, "ab") as out:
            subprocess.run(
                [
                    install_db,
                    "--no-defaults",
                    f"--datadir={data_dir}",
                    "--auth-root-authentication-method=normal",  # root@127.0.0.1 without a password
                    "--skip-test-db",
                ],
                stdout=out,
                stderr=out,
                check=True,
                timeout=120,
                cwd=workdir,
                preexec_fn=die_with_parent,
                **as_user,
            )
        port = free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    mariadbd,
                    "--no-defaults",
                    f"--datadir={data_dir}",
                    f"--port={port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={workdir / 'mariadb.sock'}",
                    f"--pid-file={workdir / 'mariadb.pid'}",
                    "--skip-name-resolve",
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_general_ci",
                    "--innodb-buffer-pool-size=64M",
                    "--skip-log-bin",
                ],
                stdout=out,
                stderr=out,
                cwd=workdir,
                preexec_fn=die_with_parent,
                **as_user,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"could not set up a private MariaDB: {exc}\n{text}") from None
    server = MariaDBServer("127.0.0.1", port, process=process, workdir=workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        # The port opens once recovery and the grant tables are loaded: ready for logins.
        if _reachable("127.0.0.1", port):
            return server
        time.sleep(0.1)
    text = log.read_text(errors="replace")[-2000:]
    server.stop()
    raise RuntimeError(f"the private MariaDB did not start (exit code {process.poll()}): {text}")


@dataclass
class RabbitMQServer:
    """A reachable RabbitMQ (guest/guest): the machine's own on :5672, or a private node."""

    url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    base_dir: Path | None = None

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def ensure_rabbitmq(*, private: bool = False) -> RabbitMQServer:
    """Use the RabbitMQ on 127.0.0.1:5672 if it answers, else start a private node (and its own epmd).

    The private node keeps everything in a temporary directory and talks to an epmd of its own
    on a free port, started here and stopped with it, so nothing outlives the tests.
    """
    if not private and _reachable("127.0.0.1", 5672):
        return RabbitMQServer("amqp://guest:guest@127.0.0.1:5672//")
    server = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    epmd = shutil.which("epmd") or next(iter(sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), None)
    if not Path(server).exists() or epmd is None:
        raise RuntimeError("RabbitMQ is not running on :5672 and rabbitmq-server is not installed")
    base = Path(tempfile.mkdtemp(prefix="dms-rabbitmq-"))
    port, epmd_port, dist_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "HOME": str(base),  # the Erlang cookie is written here
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"dms{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
    }
    for sub in ("mnesia", "log", "plugins-expand"):
        (base / sub).mkdir()
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
    if os.geteuid() == 0:
        # Debian's rabbitmq-server script runs the node as the rabbitmq user when started as root.
        base.chmod(0o755)
        for path in [base, *base.rglob("*")]:
            shutil.chown(path, "rabbitmq", "rabbitmq")
    log = open(base / "server.log", "ab")  # noqa: SIM115 - the processes keep writing to it
    processes = [
        subprocess.Popen(
            [str(epmd), "-port", str(epmd_port)], env=env, stdout=log, stderr=log, preexec_fn=die_with_parent
        )
    ]
    processes.append(subprocess.Popen([server], env=env, cwd=base, stdout=log, stderr=log, preexec_fn=die_with_parent))
    rabbit = RabbitMQServer(f"amqp://guest:guest@127.0.0.1:{port}//", processes, base)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if _reachable("127.0.0.1", port):
            return rabbit
        if processes[-1].poll() is not None:
            break
        time.sleep(0.5)
    rabbit.stop()
    raise RuntimeError(f"could not start rabbitmq-server: see {base / 'server.log'}")
