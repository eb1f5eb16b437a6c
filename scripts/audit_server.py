"""Start and stop the CouchDB-compatible audit store (pouchdb-server from npm) for tests.

CouchDB is not packaged for Debian 12, so the tests run pouchdb-server, pinned in the
repository's package.json / package-lock.json and installed into node_modules/ with
`npm ci --ignore-scripts` (no native build: leveldown ships a linux-x64 prebuild, and the
optional sqlite3 backend is never used).

Authentication: the server runs WITHOUT an admin, and clients use NoAuthAuthenticator.
ibmcloudant's session login cannot work against pouchdb-server (the SDK sends `username`,
the server wants `name`, and the SDK then hangs), and once an admin exists an anonymous
`PUT /db` crashes the server. Without an admin every request is allowed, which is safe
because the server only ever binds 127.0.0.1. `start_audit_server(admin=(name, password))`
sets an admin for the tests of BasicAuthenticator; such a server must then always be
called with those credentials.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scripts.services import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "node_modules"
SERVER_BIN = NODE_MODULES / "pouchdb-server" / "bin" / "pouchdb-server"
# Written after a successful `npm ci`: node_modules matches the lock whose hash it holds.
INSTALL_STAMP = NODE_MODULES / ".dms-installed"
START_TIMEOUT_S = 30.0
NPM_TIMEOUT_S = 600.0
_STARTED: list[AuditServer] = []


class AuditServerError(RuntimeError):
    """The audit server could not be installed or started; the message carries the log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lock_digest() -> str:
    return hashlib.sha256((ROOT / "package-lock.json").read_bytes()).hexdigest()


def ensure_node_modules() -> None:
    """Run `npm ci` once, and only when node_modules does not match package-lock.json."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise AuditServerError("node and npm are needed for the audit server (pouchdb-server); install Node 18+")
    # The lock file doubles as a cross-process mutex, so parallel test workers install once.
    with open(ROOT / "package-lock.json", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            digest = _lock_digest()
            if SERVER_BIN.exists() and INSTALL_STAMP.exists() and INSTALL_STAMP.read_text().strip() == digest:
                return
            cmd = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]
            try:
                result = subprocess.run(
                    cmd, cwd=ROOT, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise AuditServerError(f"`{' '.join(cmd)}` did not finish within {NPM_TIMEOUT_S:.0f} s") from exc
            if result.returncode != 0:
                tail = (result.stdout + result.stderr)[-3000:]
                raise AuditServerError(f"`{' '.join(cmd)}` failed with exit code {result.returncode}:\n{tail}")
            INSTALL_STAMP.write_text(digest + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class AuditServer:
    """A running pouchdb-server process and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path | None
    state_dir: Path
    log_file: Path
    admin: tuple[str, str] | None = field(default=None, repr=False)  # holds a password
    _owns_state_dir: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; idempotent. The node process has no children."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        atexit.unregister(self.stop)
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def start_audit_server(
    port: int | None = None,
    data_dir: Path | None = None,
    *,
    admin: tuple[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> AuditServer:
    """Start pouchdb-server on 127.0.0.1 and return once it answers.

    With ``data_dir`` the databases are LevelDB directories in it and survive a restart on
    the same directory; without it the server keeps everything in memory. ``admin`` sets an
    admin (name, password) once the server is up; see the module docstring.
    """
    ensure_node_modules()
    port = port or free_port()
    if data_dir is not None:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        # pouchdb-server writes config.json and log.txt next to the databases.
        state_dir, owns_state_dir = data_dir, False
        storage = ["--dir", str(data_dir)]
    else:
        state_dir, owns_state_dir = Path(tempfile.mkdtemp(prefix="dms-audit-server-")), True
        storage = ["--in-memory"]
    log_file = state_dir / f"server-{port}.log"
    cmd = [
        shutil.which("node") or "node",
        str(SERVER_BIN),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(state_dir / "config.json"),
        "--no-color",
        *storage,
    ]
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    with open(log_file, "ab") as log:
        # node runs the server itself (no npm or shell in between), so this PID is the server.
        process = subprocess.Popen(
            cmd,
            cwd=state_dir,  # its log.txt lands here, never in the work tree
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # only a prctl call: safe between fork and exec
        )
    server = AuditServer(process, port, data_dir, state_dir, log_file, admin, owns_state_dir)
    atexit.register(server.stop)
    _STARTED.append(server)
    try:
        _wait_until_ready(server, timeout, log_offset)
        if admin is not None:
            _set_admin(server, *admin)
    except BaseException:
        server.stop()
        raise
    return server


def running_servers() -> list[AuditServer]:
    """Servers started in this process that are still running (for leak checks)."""
    return [server for server in _STARTED if server.is_running()]


def _wait_until_ready(server: AuditServer, timeout: float, log_offset: int) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    started_line = f"has started on {server.url}/".encode()
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AuditServerError(
                f"pouchdb-server on port {server.port} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        # Whatever else listens on the port would answer too (a server that is still
        # running there, say); only our own process logging that it listens counts.
        with open(server.log_file, "rb") as log:
            log.seek(log_offset)
            if started_line not in log.read():
                time.sleep(0.05)
                continue
        try:
            resp = requests.get(server.url + "/", timeout=2)
            if resp.ok and "express-pouchdb" in resp.json():
                return
            last_error = f"GET / answered {resp.status_code}: {resp.text[:200]}"
        except (requests.RequestException, ValueError) as exc:
            last_error = f"{type(exc).__name__}"
        time.sleep(0.1)
    raise AuditServerError(
        f"pouchdb-server on port {server.port} did not answer within {timeout:.0f} s ({last_error}):\n"
        f"{server.log_tail()}"
    )


def _set_admin(server: AuditServer, name: str, password: str) -> None:
    # The first admin may be created anonymously (CouchDB's "admin party"); the value is a JSON string.
    resp = requests.put(f"{server.url}/_config/admins/{name}", data=json.dumps(password), timeout=10)
    if not resp.ok:
        raise AuditServerError(f"could not set the admin on port {server.port}: {resp.status_code} {resp.text[:200]}")


if __name__ == "__main__":  # pragma: no cover - a manual check: start, print the URL, wait for Ctrl-C
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5984)
    parser.add_argument("--data-dir", type=Path, default=None, help="omit to keep everything in memory")
    args = parser.parse_args()
    srv = start_audit_server(args.port, args.data_dir)
    print(f"audit server at {srv.url} (pid {srv.pid}); Ctrl-C stops it", flush=True)
    try:
        srv.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
