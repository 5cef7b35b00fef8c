"""Headless Chromium for the web page: the test's browser, and the README's screenshot.

    python -m finetune.serving.browser --model models/export --out docs/web-page.png

starts the service on a free port, types a review into the page, clicks Predict and saves
a screenshot. Needs Debian's ``chromium`` and ``chromium-driver`` packages.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1000,900"]
REVIEW = "An uneven film, but the cast is wonderful and the ending moved me."

log = logging.getLogger(__name__)


def headless_chromium(profile: Path) -> Any:
    """A selenium driver for Debian's Chromium, with a fresh profile folder."""
    if not CHROMEDRIVER.exists():
        raise FileNotFoundError(f"no {CHROMEDRIVER}: install Debian's chromium and chromium-driver packages "
                                "(`apt-get install chromium chromium-driver`; `.ci/run` does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


def wait_for_body(driver: Any, attribute: str, value: str, timeout: float = 20) -> None:
    """Wait until the page marks ``<body data-ATTRIBUTE=VALUE>`` (the page counts its answers there)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute(f"data-{attribute}") == value)


def predict_on_page(driver: Any, url: str, review: str) -> None:
    """Open the page, type ``review``, click Predict and wait for the answer."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    wait_for_body(driver, "ready", "true")
    driver.find_element(By.ID, "text").send_keys(review)
    driver.find_element(By.ID, "predict").click()
    wait_for_body(driver, "answers", "1")


def main(argv: list[str] | None = None) -> int:
    from finetune.serving.loadtest import running_service

    parser = argparse.ArgumentParser(prog="python -m finetune.serving.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/export")
    parser.add_argument("--out", type=Path, default=Path("docs/web-page.png"))
    parser.add_argument("--review", default=REVIEW)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = str(Path(args.model).resolve())  # the service runs in the project root
    with tempfile.TemporaryDirectory() as tmp, running_service(["--model", model], Path(tmp) / "serve.log") \
            as url:
        driver = headless_chromium(Path(tmp) / "profile")
        try:
            predict_on_page(driver, url, args.review)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    log.info("screenshot of the answered page written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
