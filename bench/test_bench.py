"""bench.py's own logic, without root or a kernel: the result table it rewrites in
docs/benchmarks.md (every row kept, whatever its figure holds) and which rows fail a run.
Run by `cargo xtask test` (unit step): `.venv/bin/pytest bench/test_bench.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

# As bench_tcp records it: the figure holds three `|`.
TCP_EXACT = {"bench": "tcp", "figure": "|exported − made| (connects + accepts) − lost", "median": 0.0, "min": 0.0,
             "max": 0.0, "unit": "events", "n": 1, "target": "0", "verdict": "met", "gate": True}
DNS_RATE = {"bench": "dns", "figure": "credwatch / none (95% CI of the median 0.977–0.978)", "median": 0.9775,
            "min": 0.263, "max": 1.847, "unit": "x", "n": 1250, "target": "≥ 0.97", "verdict": "met", "gate": False}
# A row as bench.py wrote it before cells were escaped (docs of 2026-12-06 and earlier).
OLD_TCP_EXACT = "| tcp | |exported − made| (connects + accepts) − lost | 0 | 0 – 0 | events | 0 | met | 2026-12-06 10:21 |"
OLD_FASTPATH = "| fastpath | credwatch / empty | 1.348 | 1.208 – 1.496 | x | ≤ 1.5 | met | 2026-12-06 10:21 |"


def doc(*rows: str) -> str:
    return "\n".join(["# Benchmarks", "", bench.BEGIN, "Machine: …", "", bench.TABLE_HEADER,
                      "|---|---|---|---|---|---|---|---|", *rows, bench.END, "", "## After"])


def test_every_row_is_kept_whatever_its_figure_holds():
    rows = [bench.table_row(DNS_RATE, "2026-12-06 10:21"), bench.table_row(TCP_EXACT, "2026-12-06 10:21"),
            OLD_TCP_EXACT, OLD_FASTPATH]
    assert bench.previous_rows(doc(*rows)) == rows


def test_a_written_row_reads_back_cell_for_cell():
    line = bench.table_row(TCP_EXACT, "2026-12-06 10:21")
    assert line.count("|") > 9  # the figure's own bars are in it, escaped
    assert bench.row_cells(line) == ["tcp", "|exported − made| (connects + accepts) − lost", "0",
                                     "single value (n=1)", "events", "0", "met", "2026-12-06 10:21"]
    assert bench.row_cells(bench.table_row(DNS_RATE, "t"))[3] == "0.263 – 1.847 (n=1250)"


def test_rows_of_benchmarks_that_did_not_run_stay_and_the_rerun_ones_are_replaced():
    previous = bench.previous_rows(doc(OLD_TCP_EXACT, OLD_FASTPATH, bench.table_row(DNS_RATE, "t")))
    assert bench.merged_rows(previous, {"fastpath", "dns"}) == [OLD_TCP_EXACT]
    assert bench.merged_rows(previous, {"e2e"}) == previous


def test_no_markers_no_rows():
    assert bench.previous_rows("# Benchmarks\n| fastpath | x | 1 | 1 – 1 | x |  |  | t |\n") == []


def test_only_exactness_rows_that_missed_fail_the_run():
    speed_missed = {**DNS_RATE, "verdict": "MISSED"}
    exact_missed = {**TCP_EXACT, "median": 1.0, "verdict": "MISSED"}
    assert bench.missed_gates([DNS_RATE, TCP_EXACT, speed_missed]) == []
    assert bench.missed_gates([DNS_RATE, exact_missed, speed_missed]) == [exact_missed]


def test_a_quick_run_judges_only_exactness_rows():
    at_most_two = lambda v: v <= 2  # noqa: E731
    assert bench.verdict(2.35, at_most_two, gate=False, quick=True) == bench.QUICK_VERDICT
    assert bench.verdict(2.35, at_most_two, gate=False, quick=False) == "MISSED"
    assert bench.verdict(1.0, at_most_two, gate=False, quick=False) == "met"
    exact = lambda v: v == 0  # noqa: E731
    assert bench.verdict(-80, exact, gate=True, quick=True) == "MISSED"
    assert bench.verdict(0, exact, gate=True, quick=True) == "met"
    assert bench.verdict(5.0, None, gate=False, quick=True) == ""
