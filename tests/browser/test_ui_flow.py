"""A migration from the Airflow UI, as a person does it, in headless Chromium.

Log in with the password `make airflow` printed, open the DMS DAG, fill in the trigger form,
start the run, wait for it to succeed, then find its counts on the Migrations page (the
plugin's nav entry, which the UI shows in an iframe). Screenshots of every step are kept in
logs/browser-artifacts/<test>/.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import AirflowUI

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

pytestmark = pytest.mark.slow

DAG_ID = "dms_legacy_crm_accounts"
# The sample file: 12 customers, 4 of them invalid (see tests/integration/test_sample_migration.py).
EXPECTED = {"source": 12, "loaded": 8, "rejected": 4, "failed": 0}
ROWS_PER_CHUNK = 4
RUN_SECONDS = 150


def _replace_text(element: WebElement, value: str) -> None:
    # The UI's inputs are React-controlled: type like a person (select all, then type) so
    # that React sees the change, rather than setting the DOM value.
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(value)


def _click(wait: WebDriverWait, by: str, selector: str) -> None:
    """Click what ``selector`` finds once it can be clicked.

    The UI re-renders while its data loads, replacing elements a moment after they appear;
    finding and clicking again is what a person's second click does.
    """

    def attempt(driver: WebDriver) -> bool:
        try:
            driver.find_element(by, selector).click()
        except (
            NoSuchElementException,
            StaleElementReferenceException,
            ElementClickInterceptedException,
            ElementNotInteractableException,
        ):
            return False
        return True

    wait.until(attempt, f"could not click {selector}")


def _log_in(browser: WebDriver, ui: AirflowUI, wait: WebDriverWait) -> None:
    browser.get(f"{ui.base_url}/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(ui.username)
    browser.find_element(By.NAME, "password").send_keys(ui.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda driver: "/auth/login" not in driver.current_url)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=nav-dags-link]")))


def _fill_trigger_form(browser: WebDriver, wait: WebDriverWait, run_id: str) -> WebElement:
    submit = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")))
    # "Rows per chunk" is the DAG's chunk_rows Param: 12 rows in chunks of 4 make 3 chunks.
    _replace_text(wait.until(ec.element_to_be_clickable((By.NAME, "element_chunk_rows"))), str(ROWS_PER_CHUNK))
    # New DAGs are paused; the form unpauses on trigger when this box is ticked (the default).
    unpause = browser.find_elements(By.XPATH, "//label[contains(., 'Unpause')]")
    if unpause and not unpause[0].find_element(By.CSS_SELECTOR, "input").is_selected():
        unpause[0].click()
    advanced = browser.find_element(By.XPATH, "//button[normalize-space()='Advanced Options']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", advanced)
    advanced.click()
    wait.until(ec.element_to_be_clickable((By.NAME, "dagRunId"))).send_keys(run_id)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
    try:
        WebDriverWait(browser, 10).until(lambda _: submit.is_enabled())
    except TimeoutException:
        # The form keeps Trigger disabled while a required field is empty; name them.
        empty = [
            element.get_attribute("name")
            for element in browser.find_elements(By.CSS_SELECTOR, "[role=dialog] input[required]")
            if not element.get_attribute("value")
        ]
        pytest.fail(
            f"the trigger form keeps Trigger disabled; required fields left empty: {empty} "
            "(a Param whose default is empty needs a type that allows null, e.g. ['null', 'string'])"
        )
    return submit


def test_trigger_a_migration_and_find_its_counts_on_the_migrations_page(
    airflow_ui: AirflowUI, browser: WebDriver, screenshot: Callable[[str], Path]
) -> None:
    # The UI re-renders while its data loads: an element found a moment ago may be replaced.
    wait = WebDriverWait(browser, 30, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    run_id = f"browser_test_{uuid.uuid4().hex[:8]}"

    # 1. Log in with the generated admin password.
    _log_in(browser, airflow_ui, wait)
    screenshot("logged-in")

    # 2. Open the DMS DAG from the Dags list.
    _click(wait, By.CSS_SELECTOR, "[data-testid=nav-dags-link]")
    _click(wait, By.CSS_SELECTOR, f"a[href$='/dags/{DAG_ID}']")
    wait.until(ec.url_matches(f"/dags/{DAG_ID}$"))
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]")))
    screenshot("dag")

    # 3. Fill in the trigger form and start the run.
    _click(wait, By.CSS_SELECTOR, "[data-testid=trigger-dag-button]")
    submit = _fill_trigger_form(browser, wait, run_id)
    screenshot("trigger-form")
    submit.click()
    wait.until(ec.url_contains(f"/dags/{DAG_ID}/runs/{run_id}"))
    screenshot("run-started")

    # 4. Wait for success.
    run = airflow_ui.wait_for_run(DAG_ID, run_id, timeout=RUN_SECONDS)
    assert run["state"] == "success", (run, airflow_ui.task_states(DAG_ID, run_id))
    assert run["conf"]["chunk_rows"] == ROWS_PER_CHUNK
    browser.refresh()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "reconcile"))
    screenshot("run-succeeded")

    # 5. Open the Migrations page from the navigation and find the run's counts.
    _click(wait, By.CSS_SELECTOR, "a[href$='/plugin/migrations']")
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe[title=Migrations]")))
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#dms-runs tr[data-run-id='{run_id}']")))
    assert "success" in row.text
    _click(wait, By.LINK_TEXT, run_id)
    section = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#dms-run[data-run-id='{run_id}']")))
    counts = {
        key: int(section.find_element(By.CSS_SELECTOR, f"td[data-object='accounts'][data-count='{key}']").text)
        for key in EXPECTED
    }
    assert counts == EXPECTED
    for series in ("loaded", "rejected"):
        bar = section.find_element(By.CSS_SELECTOR, f"#dms-chart rect[data-object='accounts'][data-series='{series}']")
        assert bar.get_attribute("data-value") == str(EXPECTED[series])
    assert "triggered by admin" in section.text.replace("\n", " ")
    rejects_url = section.find_element(By.LINK_TEXT, "rejects.csv").get_attribute("href")
    browser.switch_to.default_content()
    screenshot("migrations")

    # The report link works with the browser's own session (the UI's _token cookie) and no other.
    cookie = browser.get_cookie("_token")
    assert cookie is not None
    report = requests.get(rejects_url, cookies={"_token": cookie["value"]}, timeout=30)
    assert report.status_code == 200, report.text
    rejected = list(csv.DictReader(io.StringIO(report.text)))
    assert len(rejected) == EXPECTED["rejected"]
    assert requests.get(rejects_url, timeout=30).status_code == 401

    # 6. The page's link to the run leaves the iframe for Airflow's own run page.
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe[title=Migrations]")))
    _click(wait, By.LINK_TEXT, "Open the run in Airflow")
    browser.switch_to.default_content()
    wait.until(ec.url_contains(f"/dags/{DAG_ID}/runs/{run_id}"))
    assert "/plugin/" not in browser.current_url
    screenshot("airflow-run")
