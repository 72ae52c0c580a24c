"""Benchmark: how long the bundled survey takes to load (cold, in a fresh process) and to query.

Prints figures measured in this one run; the target is a cold load in well under a second.
Run: python bench/bench_survey_load.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

CHILD = """
import time, json
t0 = time.perf_counter()
from selfalign.loaders import load_bundled, survey_path
path = survey_path("wvs7")
t1 = time.perf_counter()
survey = load_bundled(path)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "questions": len(survey.questions),
                  "countries": len(survey.countries), "languages": len(survey.languages)}))
"""


def main() -> None:
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    load = statistics.median(r["load_s"] for r in runs)
    imp = statistics.median(r["import_s"] for r in runs)
    from selfalign.loaders import load_bundled, survey_path

    survey = load_bundled(survey_path("wvs7"))
    t = time.perf_counter()
    n = 0
    for country in survey.countries:
        for q in survey.questions:
            if survey.has_answers(country, q.id):
                survey.majority_option(country, q.id)
                n += 1
    per_query = (time.perf_counter() - t) / n
    first = runs[0]
    print(
        f"wvs7: {first['questions']} questions x {first['countries']} countries, {first['languages']} languages\n"
        f"cold load (median of 5 fresh processes): {load * 1000:.0f} ms  (target < 1000 ms: {load / 1.0:.2f} of it)\n"
        f"package import before load: {imp * 1000:.0f} ms\n"
        f"majority-option query: {per_query * 1e6:.1f} us ({n} queries)"
    )


if __name__ == "__main__":
    main()
