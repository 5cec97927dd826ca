"""The status page and GraphiQL in a real headless browser, with no internet: a deployment started through the
API appears on the status page and reaches COMPLETED there without a reload; GraphiQL renders and runs a query."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from graphql_api.graphiql import missing_files
from tests.browser.conftest import ASSETS
from tests.loud import loud_skip

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(180)]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    """Poll a condition until it is truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def only_local_requests(browser: Any, base: str) -> None:
    """Every resource the page loaded came from the server under test."""
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(base.replace("http", "ws", 1)) or url.startswith(base) for url in urls), urls


def test_a_deployment_appears_and_completes_on_the_status_page_without_a_reload(browser: Any, dev_stack: str) -> None:
    """The page is open; a deployment started through the API shows up and turns COMPLETED live."""
    from selenium.webdriver.common.by import By

    browser.get(dev_stack + "/")
    browser.execute_script("window.__notReloaded = true")
    wait_until(lambda: browser.find_element(By.ID, "live").text == "live", "the page's websocket")
    body = httpx.post(f"{dev_stack}/graphql", json={"query": 'mutation { deploy(input: {name: "shop"}) { id } }'})
    deployment_id = body.json()["data"]["deploy"]["id"]
    row = wait_until(lambda: browser.find_element(By.ID, f"d-{deployment_id}"), "the new row")
    assert "shop" in row.text
    wait_until(lambda: "COMPLETED" in browser.find_element(By.ID, f"d-{deployment_id}").text, "COMPLETED")
    assert browser.execute_script("return window.__notReloaded") is True
    wait_until(lambda: browser.find_element(By.ID, "gauge-text").text == "1 / 3", "the droplet gauge")
    only_local_requests(browser, dev_stack)

    browser.get(f"{dev_stack}/?deployment={deployment_id}")
    wait_until(lambda: "Rolling update completed." in browser.find_element(By.ID, "build-log").text, "the build log")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#events tr")) > 5


def test_graphiql_renders_and_runs_a_query(browser: Any, dev_stack: str) -> None:
    """GraphiQL loads from the local assets, runs a query and shows the answer."""
    from selenium.webdriver.common.by import By

    if missing_files(ASSETS):
        loud_skip(f"GraphiQL browser test: its files are not in {ASSETS} (run `.venv/bin/deployer assets`)")
    query = "{ dropletCount { active limit available } }"
    browser.get(f"{dev_stack}/graphql?q={quote(query)}")
    button = wait_until(lambda: browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button"), "GraphiQL")
    button.click()
    wait_until(
        lambda: '"limit": 3' in browser.find_element(By.CSS_SELECTOR, ".graphiql-response").text, "the query result"
    )
    only_local_requests(browser, dev_stack)


def test_the_fallback_page_runs_a_query_when_graphiql_is_missing(browser: Any, dev_stack: str, tmp_path: Any) -> None:
    """Without GraphiQL's files /graphql says why and still runs an operation and shows the schema."""
    from selenium.webdriver.common.by import By

    from graphql_api.graphiql import graphiql_page

    (tmp_path / "fallback.html").write_text(graphiql_page(tmp_path / "no-assets"))
    browser.get(dev_stack + "/graphql")  # same origin, then swap in the fallback page's document
    browser.execute_script("document.open(); document.write(arguments[0]); document.close();",
                           (tmp_path / "fallback.html").read_text())  # fmt: skip
    assert "GraphiQL is not available" in browser.find_element(By.ID, "why").text
    browser.find_element(By.ID, "run").click()
    wait_until(lambda: '"limit": 3' in browser.find_element(By.ID, "result").text, "the fallback's result")
    browser.find_element(By.ID, "schema").click()
    wait_until(lambda: "type Query" in browser.find_element(By.ID, "result").text, "the schema")
