"""Size of the run folder's prompt store and of report.html, and the per-probe view's speed, on a run shaped
like the paper's: the real plan of ``evals/paper.toml`` (23,560 rows, 7,852 distinct prompts, rendered by the
real programs), with model answers drawn from a hash of each prompt (no model is called).

Prints the sizes (prompts.jsonl.gz against the same JSON uncompressed; report.html against the 20 MB bound)
and, where Chromium and chromedriver are installed, the time from navigation to a ready per-probe view, a
filter on one country, a free-text search over every prompt, and opening one probe, as measured in the page.

    .venv/bin/python bench/bench_report_probes.py [--spec paper] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

from selfalign.models.types import AnswerDistribution, ScoringMethod
from selfalign.plan import plan_run, render_rows
from selfalign.prompt_store import PROMPTS_FILE, store_prompts
from selfalign.report import render_report
from selfalign.runtable import COLUMNS, model_fields, rows_to_frame, write_table
from selfalign.specs import load_spec


def build_run(spec_name: str, out: Path) -> tuple[int, int]:
    """Plan and render the spec, answer from prompt hashes, store table and prompts; (rows, prompts)."""
    plan = plan_run(load_spec(spec_name))
    render_rows(plan, plan.rows)
    rows, entries = [], {}
    for row in plan.rows:
        sha = row.base["prompt_sha256"]
        entries.setdefault(sha, (sha, row.prompt, row.shown))
        p = 0.02 + 0.96 * int(sha[:8], 16) / 16**8
        rest = [(1 - p) / (len(row.prompt.options) - 1)] * (len(row.prompt.options) - 1)
        dist = AnswerDistribution(row.prompt.options, (p, *rest), ScoringMethod.LOGPROB, latency_s=0.1)
        fields = model_fields(row.base, dist)
        rows.append({c: {**row.base, **fields, "finished_at": "2026-01-01T00:00:00+00:00"}.get(c) for c in COLUMNS})
    write_table(rows_to_frame(rows), out)
    store_prompts(out, entries.values())
    return len(rows), len(entries)


def measure_in_browser(page: Path) -> dict[str, float] | None:
    """Milliseconds measured by the page itself, or None without Chromium."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.body.dataset.probesReady"))
        ready = driver.execute_script("return performance.now()")  # ms since navigation start (upper bound)
        timings = driver.execute_script(
            """
            const t = () => performance.now(), change = id => document.getElementById(id)
                .dispatchEvent(new Event('change'));
            const s = document.getElementById('pv-country'); s.value = s.options[1].value;
            let t0 = t(); change('pv-country'); const filter = t() - t0;
            document.getElementById('pv-text').value = 'religion';
            t0 = t(); change('pv-country'); const firstSearch = t() - t0;   // builds the lower-case index once
            document.getElementById('pv-text').value = 'important in my life';
            t0 = t(); change('pv-country'); const search = t() - t0;
            t0 = t(); document.querySelector('#pv-table tbody tr').click(); const open = t() - t0;
            return [filter, firstSearch, search, open];
            """
        )
    finally:
        driver.quit()
    return dict(zip(("ready", "filter", "first_search", "search", "open"), [ready, *timings], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="paper")
    parser.add_argument("--out", default=None, help="run folder to keep (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-report-"))
    started = time.perf_counter()
    n_rows, n_prompts = build_run(args.spec, out)
    print(f"run: {n_rows} rows, {n_prompts} distinct prompts ({time.perf_counter() - started:.1f} s to plan and store)")
    store = out / PROMPTS_FILE
    raw = len(gzip.decompress(store.read_bytes()))
    print(f"{PROMPTS_FILE}: {store.stat().st_size / 1e6:.2f} MB ({raw / 1e6:.1f} MB of JSON lines uncompressed)")
    for name in ("runs.parquet", "runs.csv"):
        print(f"{name}: {(out / name).stat().st_size / 1e6:.2f} MB")
    started = time.perf_counter()
    _, html = render_report(out)
    took = time.perf_counter() - started
    print(f"report.html: {html.stat().st_size / 1e6:.2f} MB (bound 20 MB); rendered in {took:.1f} s")
    timings = measure_in_browser(html)
    if timings is None:
        print("browser: chromium/chromedriver not installed, not measured")
    else:
        print("browser (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
