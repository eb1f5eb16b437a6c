"""Fixtures for the browser tests: Airflow standalone as `make airflow` starts it, and headless Chromium.

Airflow runs as ``python -m scripts.airflow_standalone`` (the Makefile's `airflow` target) on
a free port, with an AIRFLOW_HOME and a results directory of its own, and the local stack it
starts (or finds). Chromium is Debian's, driven by Debian's chromedriver through Selenium;
nothing is downloaded. Every process either starts carries a marker in its environment, so
the fixtures can check that none is left when they end.

Screenshots (and, on failure, the page source and logs) go to logs/browser-artifacts/<test>/,
which git ignores.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from scripts.services import free_port
from tests.conftest import ROOT

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ARTIFACTS = ROOT / "logs" / "browser-artifacts"
MARKER_ENV = "DMS_BROWSER_TEST"
# What `scripts.airflow_standalone` prints once Airflow has generated the admin password.
_LOGIN_LINE = re.compile(r"Airflow UI: (?P<url>http://\S+)\s+login (?P<user>\S+) / (?P<password>\S+)")
STARTUP_SECONDS = 180


def _processes_with(marker: str) -> list[int]:
    """PIDs of the processes whose environment carries ``marker`` (``NAME=value``)."""
    wanted = marker.encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if wanted in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


def _ensure_gone(marker: str, what: str, grace: float = 20.0) -> None:
    """Wait for every process with ``marker`` to end; kill (by PID) and report the stragglers."""
    deadline = time.monotonic() + grace
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    described = []
    for pid in left:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            described.append(f"{pid} {cmdline[:120]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"{what} left processes running (now killed): {described}")


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class AirflowUI:
    """A running Airflow standalone: where it is, how to log in, and its REST API."""

    base_url: str
    username: str
    password: str
    home: Path
    results: Path
    log_file: Path
    _token: str | None = field(default=None, repr=False)

    def token(self) -> str:
        """A JWT from the login endpoint the UI uses, with the generated password."""
        if self._token is None:
            response = requests.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, path: str) -> requests.Response:
        return requests.get(f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=30)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """The DAG run once it is no longer queued or running (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            run = response.json() if response.status_code == 200 else {"state": f"HTTP {response.status_code}"}
            if run.get("state") not in ("queued", "running") or time.monotonic() > deadline:
                return run
            time.sleep(2)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        response = self.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in response.json().get("task_instances", [])}


def _clean_env(marker_value: str) -> dict[str, str]:
    """The environment of a shell that runs `make airflow`, plus the marker.

    tests/conftest.py points AIRFLOW_* at the test session's throw-away home and database,
    and other tests set connections and DMS_* roots: none of that may reach this Airflow.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "DMS_", "PYTEST_")) and key not in ("REQUESTS_CA_BUNDLE", "PYTHONPATH")
    }
    env[MARKER_ENV] = marker_value
    env["PYTHONUNBUFFERED"] = "1"  # the login line must reach the log as soon as it is printed
    return env


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    """Airflow standalone with the DMS DAGs and the local stack, on a free port; stopped at the end."""
    workdir = tmp_path_factory.mktemp("airflow-standalone")
    home, results, log_file = workdir / "home", workdir / "results", workdir / "airflow-standalone.log"
    port = free_port()
    marker_value = uuid.uuid4().hex
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.airflow_standalone", "--port", str(port), "--home", str(home)]
            + ["--results-dir", str(results)],
            cwd=ROOT,
            env=_clean_env(marker_value),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: if it ignores SIGTERM, the group (only what it started) is killed.
            start_new_session=True,
        )
    try:
        ui = _wait_until_ready(process, log_file, home, results)
        yield ui
    finally:
        _stop_standalone(process)
        _keep_log(log_file)
        _ensure_gone(f"{MARKER_ENV}={marker_value}", "Airflow standalone")


def _wait_until_ready(process: subprocess.Popen[bytes], log_file: Path, home: Path, results: Path) -> AirflowUI:
    deadline = time.monotonic() + STARTUP_SECONDS
    ui: AirflowUI | None = None
    last = "no login line yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow standalone exited with {process.returncode}:\n{_tail(log_file)}")
        if ui is None and (match := _LOGIN_LINE.search(_tail(log_file, 10**7))):
            ui = AirflowUI(match["url"], match["user"], match["password"], home, results, log_file)
        if ui is not None:
            try:
                # Up, and the DAG parsed: the API knows it.
                response = ui.api("/api/v2/dags/dms_legacy_crm_accounts")
                if response.status_code == 200:
                    return ui
                last = f"GET the DAG: HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    pytest.fail(f"Airflow was not ready after {STARTUP_SECONDS} s ({last}):\n{_tail(log_file)}")


def _stop_standalone(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM unwinds scripts.airflow_standalone like Ctrl-C: it stops Airflow's components,
    # then every service its local stack started.
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _keep_log(log_file: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.copy(log_file, ARTIFACTS / log_file.name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    # Fixtures read the outcome of the test's call phase to keep evidence of a failure.
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact directory, emptied first so that it shows the last run only."""
    directory = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@pytest.fixture
def browser(request: pytest.FixtureRequest, artifacts: Path, tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium (Debian's), driven by Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail(
            "chromium and chromedriver are needed: run scripts/system_deps.sh (apt-get install chromium "
            "chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    # With both paths given, Selenium never runs its manager, which would download a browser.
    options.binary_location = chromium
    options.add_argument("--headless=new")
    options.add_argument("--window-size=1400,1000")
    options.add_argument("--disable-dev-shm-usage")  # containers often have a tiny /dev/shm
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    marker_value = uuid.uuid4().hex
    service = Service(
        executable_path=chromedriver,
        log_output=str(artifacts / "chromedriver.log"),
        env={**os.environ, MARKER_ENV: marker_value},  # inherited by every Chromium process
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        if request.node.stash.get(_FAILED, False):
            with contextlib.suppress(Exception):
                driver.switch_to.default_content()
                driver.save_screenshot(str(artifacts / "failure.png"))
                (artifacts / "failure.html").write_text(driver.page_source)
        driver.quit()
        _ensure_gone(f"{MARKER_ENV}={marker_value}", "Chromium")


@pytest.fixture
def screenshot(browser: WebDriver, artifacts: Path) -> Callable[[str], Path]:
    """Save the window as ``NN-<step>.png`` in the test's artifact directory."""
    counter = iter(range(1, 100))

    def save(step: str) -> Path:
        path = artifacts / f"{next(counter):02d}-{step}.png"
        browser.save_screenshot(str(path))
        return path

    return save
