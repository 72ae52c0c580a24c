"""The report's per-probe view in a real headless Chromium (selenium + chromedriver): filters, paging and one
probe's detail (prompt as sent, demonstrations, both distributions), on a real run against a loopback server,
on a run folder that stored no prompts, and on a 25,000-row run with a prompt that holds ``</script>``.

Skips only where Chromium or its driver is absent (Debian: ``apt-get install -y chromium chromium-driver``);
selenium comes with the ``dev`` extra."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from report_fixtures import TRICKY, synthetic_run

from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.probe_view import NOT_STORED, probe_payload
from selfalign.prompt_store import PROMPTS_FILE, read_prompts
from selfalign.report import Report, render_report, to_html
from selfalign.runner import run_spec
from selfalign.runtable import TABLE_PARQUET, load_run_table
from selfalign.specs import parse_spec

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium driven by selenium."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _policy(body: dict, index: int) -> Reply:
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    p = 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32
    return Reply("A", (("A", math.log(p)), ("B", math.log(1 - p))))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run through the real runner: zero-shot and chrF++ (k 3) on Nigeria (English) and Egypt (Arabic), two
    probes failed by the server."""
    base = tmp_path_factory.mktemp("browser")
    with LoopbackServer(policy=_policy, faults=[400, 400]) as server:
        config = base / "models.toml"
        config.write_text(f'[models.loop]\nmodel = "openai/loopback"\napi_base = "{server.api_base}"\n')
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SELFALIGN_CONFIG", str(config))
            spec = parse_spec(
                {
                    "name": "browser-test",
                    "models": ["loop"],
                    "limit": 6,
                    "languages": ["native"],
                    "grid": [{"programs": ["zero-shot", "self-align-chrf"], "k": [3], "countries": ["NGA", "EGY"]}],
                }
            )
            run_spec(spec, base / "run", cache_dir=base / "cache", concurrency=2, progress=False)
    render_report(base / "run")
    return base / "run"


def _open(driver, path: Path, fragment: str = "") -> float:
    """Load a report and wait until the probe view is ready; the seconds it took."""
    started = time.monotonic()
    driver.get(path.resolve().as_uri() + fragment)
    _wait(
        driver,
        lambda d: (
            d.execute_script("return document.body.dataset.probesReady === '1'")
            or "pv-error" in (d.find_element("id", "pv-status").get_attribute("class") or "")
        ),
    )
    assert "pv-error" not in driver.find_element("id", "pv-status").get_attribute("class"), _status(driver)
    return time.monotonic() - started


def _wait(driver, condition) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, TIMEOUT_S).until(condition)


def _status(driver) -> str:
    return driver.find_element("id", "pv-status").text


def _choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def _rows(driver) -> list[list[str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#pv-table tbody tr'))"
        ".map(tr => Array.from(tr.cells).map(td => td.textContent));"
    )


def _detail(driver) -> dict:
    """What the detail panel shows (text content, as a reader sees it)."""
    return driver.execute_script(
        """
        const d = document.getElementById('pv-detail');
        const cells = sel => Array.from(d.querySelectorAll(sel + ' tbody tr'))
            .map(tr => Array.from(tr.cells).map(td => td.textContent));
        const facts = {};
        d.querySelectorAll('dt').forEach(dt => { facts[dt.textContent] = dt.nextElementSibling.textContent; });
        const pre = d.querySelector('pre.pv-transcript');
        const chat = d.querySelector('details.pv-chat');
        return {hidden: d.hidden, row: d.dataset.row, title: d.querySelector('h3').firstChild.textContent,
                facts: facts, dist: cells('table.pv-dist'), demos: cells('table.pv-demos'),
                transcript: pre ? pre.textContent : null, chat_open: chat ? chat.open : null,
                messages: chat ? Array.from(chat.querySelectorAll('.pv-msg pre')).map(p => p.textContent) : [],
                missing: Array.from(d.querySelectorAll('.pv-missing')).map(p => p.textContent),
                text: d.textContent};
        """
    )


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _pct(text: str) -> float:
    return float(text.strip().rstrip("%"))


def test_filter_then_open_one_probe_of_a_real_run(browser, real_run: Path) -> None:
    table = load_run_table(real_run)
    stored = read_prompts(real_run)
    seconds = _open(browser, real_run / "report.html")
    print(f"page ready in {seconds:.2f} s ({len(table)} rows)")
    assert _status(browser) == f"{len(table)} of {len(table)} probes match."

    _choose(browser, "pv-country", "EGY")
    _choose(browser, "pv-program", "self-align-chrf")
    wanted = table[(table["country"] == "EGY") & (table["program"] == "self-align-chrf")]
    rows = _rows(browser)
    assert len(rows) == len(wanted) > 0
    assert {r[1] for r in rows} == {"EGY"} and {r[3] for r in rows} == {"self-align-chrf"}
    assert [int(r[0]) for r in rows] == list(wanted.index)
    assert _status(browser) == f"{len(wanted)} of {len(table)} probes match."

    target = wanted[wanted["ok"]].index[0]
    browser.find_element("css selector", f"#pv-table tbody tr[data-row='{target}']").click()
    shown = _detail(browser)
    row = table.loc[target]
    entry = stored[row["prompt_sha256"]]
    assert not shown["hidden"] and shown["row"] == str(target)
    assert shown["title"].startswith(f"Probe #{target}: EGY, {row['question_id']} [{row['topic']}], self-align-chrf")
    assert shown["transcript"] == entry.prompt.text  # the prompt as sent, character for character (Arabic)
    assert any("\u0600" <= ch <= "\u06ff" for ch in shown["transcript"])
    assert [tuple(d) for d in shown["demos"]] == [(d.question_id, d.text, d.answer) for d in entry.demonstrations]
    assert [d[0] for d in shown["demos"]] == json.loads(row["demo_ids"]) and len(shown["demos"]) == 3
    assert shown["facts"]["method"] == row["method"] == "logprob"
    assert shown["facts"]["off-option mass"] == f"{row['off_option_mass']:.3f}"
    codes = json.loads(row["option_codes"])
    probs, shares = json.loads(row["probs"]), json.loads(row["country_shares"])
    assert [d[0] for d in shown["dist"]] == codes
    assert [d[1] for d in shown["dist"]] == json.loads(row["options_shown"])
    for cells, code in zip(shown["dist"], codes, strict=True):
        assert _pct(cells[2]) == pytest.approx(100 * probs[code], abs=0.051)  # the model
        assert _pct(cells[3]) == pytest.approx(100 * shares[code], abs=0.051)  # the country
    marks = {cells[0]: cells[4] for cells in shown["dist"]}
    assert "model's answer" in marks[row["model_choice"]] and "country's majority" in marks[row["country_majority"]]

    assert shown["chat_open"] is False  # the chat messages are folded away until asked for
    browser.find_element("css selector", "#pv-detail details.pv-chat summary").click()
    shown = _detail(browser)
    assert shown["chat_open"] is True and shown["messages"] == [m["content"] for m in entry.prompt.messages]
    assert browser.current_url.endswith(f"#probe-{target}")

    _choose(browser, "pv-country", "")
    _choose(browser, "pv-program", "")
    _choose(browser, "pv-result", "failed")
    failed = table[~table["ok"]]
    assert [int(r[0]) for r in _rows(browser)] == list(failed.index) and len(failed) >= 2
    browser.find_element("css selector", f"#pv-table tbody tr[data-row='{failed.index[0]}']").click()
    shown = _detail(browser)
    assert shown["facts"]["error"] == failed["error"].iloc[0] and "the probe failed" in shown["text"]
    assert _console_errors(browser) == []


def test_free_text_search_looks_into_the_prompts(browser, real_run: Path) -> None:
    table = load_run_table(real_run)
    stored = read_prompts(real_run)
    _open(browser, real_run / "report.html")
    # an English test statement: found in its own prompts and in those that show it as a demonstration
    nga = table[(table["country"] == "NGA") & (table["program"] == "zero-shot")].iloc[0]
    text = stored[nga["prompt_sha256"]].prompt.text
    statement = text.split('"')[-2]  # the English test statement, between quotes
    box = browser.find_element("id", "pv-text")
    box.send_keys(statement.upper())  # case does not matter
    needle = statement.lower()
    expected = [i for i, sha in enumerate(table["prompt_sha256"]) if needle in stored[sha].prompt.text.lower()]

    _wait(browser, lambda d: _status(d).startswith(f"{len(expected)} of "))
    assert [int(r[0]) for r in _rows(browser)] == expected and len(expected) >= 2
    assert _console_errors(browser) == []


def test_a_run_folder_without_stored_prompts_renders_and_says_so(browser, real_run: Path, tmp_path: Path) -> None:
    shutil.copy(real_run / TABLE_PARQUET, tmp_path / TABLE_PARQUET)  # a folder as older runs left it
    assert not (tmp_path / PROMPTS_FILE).exists()
    render_report(tmp_path)
    table = load_run_table(tmp_path)
    target = table[table["ok"] & (table["program"] == "self-align-chrf")].index[0]
    _open(browser, tmp_path / "report.html", f"#probe-{target}")  # a link to one probe opens it
    assert _status(browser) == f"{len(table)} of {len(table)} probes match ({NOT_STORED})."
    shown = _detail(browser)
    assert shown["row"] == str(target) and shown["transcript"] is None and shown["demos"] == []
    assert (
        shown["missing"][0].startswith(NOT_STORED)
        and ", ".join(json.loads(table.loc[target, "demo_ids"])) in (shown["missing"][0])
    )
    assert shown["missing"][1] == NOT_STORED + "."
    probs = json.loads(table.loc[target, "probs"])
    assert [_pct(c[2]) for c in shown["dist"]] == pytest.approx([100 * p for p in probs.values()], abs=0.051)
    assert _console_errors(browser) == []


def test_a_25000_row_run_stays_usable_and_a_prompt_cannot_break_the_page(browser, tmp_path: Path) -> None:
    table, prompts = synthetic_run(25_000, 7_800)
    html = to_html(Report(title="synthetic 25,000 rows"), probe_payload(table, prompts))
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    seconds = _open(browser, page)
    print(f"25,000-row page ({page.stat().st_size / 1e6:.1f} MB) ready in {seconds:.2f} s")
    assert _status(browser) == "25000 of 25000 probes match."
    assert browser.find_element("id", "pv-page").text == "page 1 of 500"
    _choose(browser, "pv-size", "200")
    browser.find_element("id", "pv-next").click()
    assert browser.find_element("id", "pv-page").text == "page 2 of 125"
    assert [int(r[0]) for r in _rows(browser)] == list(range(200, 400))
    browser.find_element("id", "pv-prev").click()
    assert [int(r[0]) for r in _rows(browser)] == list(range(200))
    _choose(browser, "pv-size", "50")
    _choose(browser, "pv-country", "JPN")
    _choose(browser, "pv-result", "agrees")
    wanted = table[(table["country"] == "JPN") & (table["agreement"] == 1)]
    assert _status(browser) == f"{len(wanted)} of 25000 probes match."
    assert [int(r[0]) for r in _rows(browser)] == list(wanted.index[:50])
    browser.find_element("id", "pv-last").click()
    assert [int(r[0]) for r in _rows(browser)] == list(wanted.index[(len(wanted) - 1) // 50 * 50 :])

    _choose(browser, "pv-country", "")
    _choose(browser, "pv-result", "")
    started = time.monotonic()
    browser.find_element("id", "pv-text").send_keys("alert(1)")
    tricky = [i for i, sha in enumerate(table["prompt_sha256"]) if TRICKY in prompts[sha].prompt.text]
    _wait(browser, lambda d: _status(d).startswith(f"{len(tricky)} of "))
    print(f"free-text search over 25,000 rows: {time.monotonic() - started:.2f} s (including a 0.15 s debounce)")
    browser.find_element("css selector", f"#pv-table tbody tr[data-row='{tricky[0]}']").click()
    shown = _detail(browser)
    assert shown["transcript"] == prompts[table["prompt_sha256"].iloc[tricky[0]]].prompt.text
    assert TRICKY in shown["transcript"]
    # the page still has exactly its two scripts and no element came out of the prompt's text
    counts = browser.execute_script(
        "return [document.scripts.length, document.querySelectorAll('pre.pv-transcript *').length,"
        " document.querySelectorAll('#pv-detail b').length - document.querySelectorAll('#pv-detail .pv-msg b').length]"
    )
    assert counts == [2, 0, 0]
    assert _console_errors(browser) == []
