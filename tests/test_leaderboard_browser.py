"""The HTML leaderboard in a real browser: the table renders and a header click sorts rows.

Uses Debian's chromium and chromedriver (`apt-get install -y chromium chromium-driver`) driven
by selenium. A missing browser fails the test with the install command: it is never skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from spd_bench.leaderboard import build_leaderboard

FIXTURES = Path(__file__).parent / "fixtures" / "records" / "main"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("html")
    build_leaderboard(FIXTURES, out, ["html"])
    return (out / "leaderboard.html").as_uri()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install them with `apt-get install -y chromium chromium-driver`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `pip install selenium`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _table(browser: Any, model: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'table[data-model="{model}"]')


def _group_orders(table: Any) -> dict[str, list[str]]:
    from selenium.webdriver.common.by import By

    return {
        body.get_attribute("data-group"): [
            r.get_attribute("data-method") for r in body.find_elements(By.CSS_SELECTOR, "tr.method-row")
        ]
        for body in table.find_elements(By.TAG_NAME, "tbody")
    }


def _header(table: Any, text: str) -> Any:
    from selenium.webdriver.common.by import By

    return next(th for th in table.find_elements(By.CSS_SELECTOR, "th.sortable") if th.text.startswith(text))


def _column_values(table: Any, col: int) -> list[float]:
    from selenium.webdriver.common.by import By

    rows = table.find_elements(By.CSS_SELECTOR, "tbody[data-group='no external signal'] tr.method-row")
    return [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-value")) for r in rows]


def test_table_renders_every_method_and_task(browser: Any, page: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page)
    table = _table(browser, "organism")
    assert table.is_displayed()
    methods = [r.get_attribute("data-method") for r in table.find_elements(By.CSS_SELECTOR, "tr.method-row")]
    assert sorted(methods) == ["base", "raw_sd", "rft", "spd"]
    headers = " ".join(th.text for th in table.find_elements(By.CSS_SELECTOR, "th.sortable"))
    for task in ("synth_math", "synth_mc", "synth_nll", "synth_ood"):
        assert task in headers
    assert "nll ↓" in headers
    best = table.find_elements(By.CSS_SELECTOR, "td.best .value")
    assert best and all(cell.value_of_css_property("font-weight") in ("700", "bold") for cell in best)
    assert [
        r.get_attribute("data-method")
        for r in _table(browser, "tiny-lm").find_elements(By.CSS_SELECTOR, "tr.method-row")
    ] == ["base", "spd"]


def test_clicking_a_header_sorts_by_that_column(browser: Any, page: str) -> None:
    browser.get(page)
    table = _table(browser, "organism")
    # Fixture means on synth_math: base 40.0, raw_sd 46.7, spd 76.7 (page order is ascending).
    math = _header(table, "synth_math")
    col = int(math.get_attribute("data-col"))
    math.click()
    assert math.get_attribute("aria-sort") == "descending"
    assert _group_orders(table) == {"no external signal": ["spd", "raw_sd", "base"], "external signal": ["rft"]}
    assert _column_values(table, col) == sorted(_column_values(table, col), reverse=True)
    math.click()
    assert math.get_attribute("aria-sort") == "ascending"
    assert _group_orders(table)["no external signal"] == ["base", "raw_sd", "spd"]
    # Lower is better on synth_nll (base 2.000, raw_sd 1.923, spd 1.600): the first click puts the lowest first.
    nll = _header(table, "synth_nll")
    nll.click()
    assert nll.get_attribute("aria-sort") == "ascending" and math.get_attribute("aria-sort") is None
    assert _group_orders(table)["no external signal"] == ["spd", "raw_sd", "base"]
