"""The web console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) against a seeded local stack: sign in with a token, walk experiments,
datasets and models, assert on what is rendered, and save screenshots.

Skipped, with the reason, when Chromium or its driver is not installed (``.ci/run`` installs
both with apt). ``SYNAPSE_CONSOLE_SCREENSHOTS=docs`` also writes the screenshots the README shows.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from synapse_client import Client
from tests.helpers.client import model_with_versions, two_arms
from tests.reliability.stack import running_stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
        reason="Chromium is not installed (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def seeded() -> Iterator[dict[str, Any]]:
    """A local stack with a ramped A/B test, a canary the monitor rolled back, a dataset with
    a transformation (lineage) and a model in production."""
    with running_stack(schedule_seconds=1) as stack:
        api = Client(stack.url, stack.admin_token)
        model_id = model_with_versions(api)
        api.set_stage(model_id, 1, "production")
        country = {"country": {"max_values": 5}}
        ab = api.create_experiment("ranker v2 vs v1", two_arms(model_id), dimensions=country)
        ab = ab["experiment_id"]
        api.start_experiment(ab)
        api.record_outcomes(ab, [
            {"variant_id": v, "request_id": f"{v}-{i}", "success": True, "latency_ms": 30 + i % 7,
             "converted": i % (10 if v == "control" else 7) == 0,
             "attributes": {"country": "BR" if i % 4 == 0 else "US"}}
            for v in ("control", "treatment") for i in range(400)])  # fmt: skip
        canary = api.create_experiment("canary v2", two_arms(model_id, "0.9", "0.1"))
        canary_id = canary["experiment_id"]
        api.set_rollback_policy(canary_id, error_rate_threshold=0.05,
                                min_requests_before_rollback=50)  # fmt: skip
        api.start_experiment(canary_id)
        api.record_outcomes(canary_id, [
            {"variant_id": v, "request_id": f"c-{v}-{i}", "latency_ms": 20.0,
             "success": v == "control" or i % 2 == 0}
            for v in ("control", "treatment") for i in range(200)])  # fmt: skip
        deadline = time.monotonic() + 90
        while api.get_experiment(canary_id)["status"] != "rolled_back":
            assert time.monotonic() < deadline, "the monitor did not roll the canary back"
            time.sleep(0.5)
        dataset_id = api.create_dataset("cells", access_groups=["ml"])["dataset_id"]
        first = api.create_version(
            dataset_id, data="id,radius,label\n1,14.1,0\n2,12.0,1\n3,9.9,1\n"
        )
        api.create_version(dataset_id, data="id,radius,label\n1,14.1,0\n2,12.0,1\n4,8.0,0\n")
        api.transform(dataset_id, {"type": "filter", "predicates": [
            {"column": "radius", "op": "lt", "value": 13}]}, [first["version_id"]])  # fmt: skip
        api.move_tag(dataset_id, "production", "2")
        yield {"stack": stack, "ab": ab, "canary": canary_id, "dataset": dataset_id,
               "model": model_id}  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1360,1000", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("SYNAPSE_CONSOLE_SCREENSHOTS")

    def save(driver: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        assert driver.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    return save


def wait_for(driver: Any, css: str, text: str | None = None, timeout: float = 30) -> Any:
    """The first element matching ``css`` (containing ``text``), polling until ``timeout``."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        for found in driver.find_elements(By.CSS_SELECTOR, css):
            try:  # the page re-renders on refreshes and hash changes
                if text is None or text in found.text:
                    return found
            except StaleElementReferenceException:
                continue
        if time.monotonic() > deadline:
            body = driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"no {css!r} with {text!r}; page shows:\n{body[:2000]}")
        time.sleep(0.2)


def test_sign_in_and_walk_experiments_datasets_and_models(
    seeded: dict[str, Any], browser: Any, shots: Callable[[Any, str], Path]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    stack = seeded["stack"]
    browser.get(f"{stack.url}/console")
    wait_for(browser, "form.token").find_element(By.ID, "token").send_keys(
        "snk_wrong_token_0000000"
    )
    browser.find_element(By.ID, "sign-in").click()
    assert "not accepted" in wait_for(browser, "form.token p.error").text
    browser.find_element(By.ID, "token").send_keys(stack.admin_token)
    browser.find_element(By.ID, "sign-in").click()
    assert (
        browser.execute_script("return sessionStorage.getItem('synapse-token')")
        == stack.admin_token
    )
    assert browser.execute_script("return localStorage.length") == 0

    listing = wait_for(browser, "table", "ranker v2 vs v1")
    assert (
        "running" in listing.text and "rolled_back" in listing.text and "canary v2" in listing.text
    )
    shots(browser, "console-experiments")

    wait_for(browser, "tr.clickable", "ranker v2 vs v1").click()
    metrics = wait_for(browser, "section.card", "Live metrics per variant")
    assert "control (control)" in metrics.text and "400" in metrics.text
    wait_for(browser, "svg.ci-chart .ci-band")
    wait_for(browser, "svg.allocation-chart rect")
    assert "Fixed percentages" in wait_for(browser, ".allocation-note").text
    bayesian = wait_for(browser, "section.card", "Bayesian reading (conversion_rate)")
    chance = wait_for(browser, ".chance-to-win").text
    assert chance.endswith(" %") and 50 < float(chance[:-2]) <= 100  # treatment converts more
    assert "Prior: Beta(1, 1)" in bayesian.text
    segments = wait_for(browser, "section.card", "segment test(s)")
    assert "country = BR" in segments.text and "country = US" in segments.text
    phases = wait_for(browser, "section.card", "Allocation over time")
    assert "start" in phases.text and "control 0.5" in phases.text  # the server's phase record
    # One automatic refresh: a second point on the interval chart (polled for, not slept for).
    wait_for(browser, "p.muted", "refresh this tab made (2)")
    shots(browser, "console-experiment")

    browser.get(f"{stack.url}/console#/experiments/{seeded['canary']}")
    reason = wait_for(browser, ".rollback-reason")
    assert "Rolled back" in reason.text and "error_rate" in reason.text
    assert wait_for(browser, ".check-outcome").text == "fail"
    assert "error" in wait_for(browser, ".check-reason").text
    decisions = wait_for(browser, "section.card", "Guardrails and decisions")
    assert "Automatic rollback on" in decisions.text

    wait_for(browser, "nav a", "Datasets").click()
    wait_for(browser, "tr.clickable", "cells").click()
    versions = wait_for(browser, "section.card", "Versions")
    assert "v3" in versions.text and "v1" in versions.text
    browser.get(f"{stack.url}/console#/datasets/{seeded['dataset']}/1")
    schema = wait_for(browser, "section.card", "Schema of v1")
    assert "radius" in schema.text and "label" in schema.text
    nodes = wait_for(browser, "svg.lineage").find_elements(By.CSS_SELECTOR, "g.lineage-node")
    assert len(nodes) == 2 and "filter" in wait_for(browser, "svg.lineage").text
    shots(browser, "console-dataset")
    browser.get(f"{stack.url}/console#/datasets/{seeded['dataset']}/2")
    changes = wait_for(browser, "section.card", "v1 → v2")
    assert "content changed" in changes.text
    tags = wait_for(browser, "section.card", "MOVED BY")  # headers are upper-cased by CSS
    assert "production" in tags.text and "v2" in tags.text and "admin" in tags.text
    drift = wait_for(browser, "#drift-result", "v1 → v2")
    radius = wait_for(browser, "#drift-result tr", "radius").text.split()
    assert radius[:2] == ["radius", "numeric"] and "KS" in radius
    Select(browser.find_element(By.ID, "drift-a")).select_by_visible_text("v3")
    drift = wait_for(browser, "#drift-result", "v3 → v2")
    assert "2 → 3 rows" in drift.text  # the filtered version has rows 2 and 3 of v1
    shots(browser, "console-drift")

    wait_for(browser, "nav a", "Models").click()
    wait_for(browser, "tr.clickable", "ranker").click()
    stages = wait_for(browser, "section.card", "Versions and stages")
    assert "production" in stages.text and "v2" in stages.text
    wait_for(browser, "#explain-run").click()
    bars = wait_for(browser, "svg.waterfall").find_elements(By.CSS_SELECTOR, ".waterfall-bar")
    assert len(bars) == 3
    assert "prediction" in wait_for(browser, "svg.waterfall").text
    wait_for(browser, "#global-run").click()
    ranked = wait_for(browser, "svg.importance").find_elements(By.CSS_SELECTOR, ".importance-bar")
    assert len(ranked) == 3
    shots(browser, "console-model")

    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "form.token")
    assert browser.execute_script("return sessionStorage.getItem('synapse-token')") is None
