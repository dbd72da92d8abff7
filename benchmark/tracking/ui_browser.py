"""Drive the MLflow UI in headless Chromium (Selenium + Debian's chromium/chromium-driver).

Used by the browser test and by ``scripts/screenshots.py``; not needed to use vqbench. The MLflow 3 UI
is a React app: pages must render before they can be read, and a sweep's child runs sit collapsed under
their parent until the row's expander is clicked.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_CANDIDATES = ("chromedriver",)
# The expander button of a parent run's name cell in MLflow 3's runs table.
EXPANDER = "button[data-component-id*='runnamecellrenderer']"
RUN_LINK_NAMES = "a[href*='/runs/'] span"
#: Opens MLflow 3's pages in its "Model training" mode rather than the GenAI one.
MODEL_TRAINING = "workflowType=machine_learning"


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = next((shutil.which(n) for n in CHROMIUM_CANDIDATES if shutil.which(n)), None)
    driver = next((shutil.which(n) for n in CHROMEDRIVER_CANDIDATES if shutil.which(n)), None)
    return (browser, driver) if browser and driver else None


@contextmanager
def headless_chromium(width: int = 1400, height: int = 900):
    """A Selenium Chrome driver on headless Chromium with no network chatter (the machine is offline)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError("headless browser not found: install Debian's chromium and chromium-driver")
    browser, driver_path = found
    options = Options()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="vqbench-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def runs_page_names(driver, base_url: str, experiment_id: str, *, expand: bool = True,
                    expect: str | None = None, timeout: float = 60.0) -> list[str]:
    """Open an experiment's runs page, expand parent rows, return the run names it lists in order.

    ``expect``: a run name to wait for after expanding (the children render asynchronously).
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}")
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, RUN_LINK_NAMES))
    if expand:
        for button in driver.find_elements(By.CSS_SELECTOR, EXPANDER):
            button.click()
    if expect:
        wait.until(lambda d: expect in [e.text for e in d.find_elements(By.CSS_SELECTOR, RUN_LINK_NAMES)])
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, RUN_LINK_NAMES) if e.text]


def screenshot(driver, url: str, path: str | Path, *, wait_css: str, timeout: float = 60.0) -> Path:
    """Open ``url``, wait for ``wait_css`` to appear, save a PNG."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, wait_css))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
