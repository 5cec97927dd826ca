"""A real browser (Debian's chromium driven by chromedriver through selenium) and a running `deployer dev`.

The browser starts headless with a fresh profile and every background network feature off, so a page that
needs the internet fails here. Without chromium and chromedriver the browser tests are skipped loudly.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.embedded_redis import free_port
from tests.loud import loud_skip
from tests.processes import FAST_PIPELINE, FAST_SANDBOX, Process, base_env, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS = REPO_ROOT / "vendor"


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless chromium with a fresh profile."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        loud_skip(
            "browser tests: chromium and chromedriver are not installed"
            " (apt-get install chromium chromium-driver; .ci/run installs them when missing)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[str]:
    """`deployer dev` with fast sandbox timings in a fresh directory; yields its base URL."""
    port = free_port()
    env = base_env({**FAST_SANDBOX, **FAST_PIPELINE, "DEPLOYER_ASSETS_DIR": str(ASSETS)})
    for name in ("REDIS_URL", "DATABASE_URL", "DO_API_KEY"):
        env.pop(name, None)
    proc = Process("dev", ["dev", "--port", str(port)], env, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
