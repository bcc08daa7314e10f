"""The benchmark report `make bench` writes into docs/benchmarks.md: its verdict on each of its
targets, and that the committed report is the committed figures' (the harness itself runs
outside CI, as its issue asks)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from bench.report import MARK_BEGIN, MARK_END, render
from tests.conftest import REPO


def _committed() -> dict[str, Any]:
    return json.loads((REPO / "bench" / "results.json").read_text())


def _results(*, submit: float, poll: float, e2e_p50: float, deliveries: float,
             batches: float = 100.0) -> dict[str, Any]:
    """The committed run with its target figures replaced (each as if measured in one round),
    against set ceilings: naive submit 1000/s, read one row 2000/s, raw round trip 4 ms
    (end-to-end limit 18 ms), a requests.Session loop 1000/s; `batches` a second of 100 jobs
    each (against `submit`). Beside the waiters, submit and poll are as without them."""
    results = _committed()
    for name, rps in (("insert_and_publish", 1000.0), ("read_one_row", 2000.0)):
        results["baseline"][name].update(rps=rps, rounds_rps=[rps])
    for name, rps in (("submit", submit), ("poll", poll), ("submit_beside_waiters", submit),
                      ("poll_beside_waiters", poll)):
        results["api"][name].update(rps=rps, rounds_rps=[rps])
    results["raw_roundtrip"]["p50_ms"] = 4.0
    results["end_to_end"]["sequential"]["webhook"]["p50_ms"] = e2e_p50
    results["delivery"]["plain_requests_session"]["per_second"] = 1000.0
    results["delivery"]["plain_requests_post"]["per_second"] = 800.0
    results["delivery"]["service"]["per_second"] = deliveries
    results["api"]["submit_batch"].update(rps=batches, jobs_per_request=100)
    return results


def _verdicts(results: dict[str, Any]) -> dict[str, str]:
    """The "met" column of the targets table, by figure (the first deliveries row: Session)."""
    verdicts: dict[str, str] = {}
    table = render(results).split("### Against the ceilings", 1)[1].split("\n\n", 2)[1]
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        verdicts.setdefault(cells[0].split(",")[0], cells[-1])
    return verdicts


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        # Each target exactly at its threshold is met.
        ({"submit": 800.0, "poll": 1600.0, "e2e_p50": 18.0, "deliveries": 700.0, "batches": 40.0}, "yes"),
        # Each just past it is not.
        ({"submit": 799.0, "poll": 1599.0, "e2e_p50": 18.1, "deliveries": 699.0, "batches": 39.9}, "**no**"),
    ],
)
def test_each_target_is_judged_against_its_ceiling(figures: dict[str, float], expected: str) -> None:
    verdicts = _verdicts(_results(**figures))

    assert verdicts == {
        "submit": expected,
        "poll": expected,
        "submit beside 500 waiters": expected,
        "poll beside 500 waiters": expected,
        "end to end p50 (sequential)": expected,
        "deliveries/s": expected,
        "jobs/s submitted": expected,
    }


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        # Four rounds at 0.85 and three disturbed ones at 0.10: the median round is 0.85 (the
        # rounds' totals would say 0.53).
        ([850.0] * 4 + [100.0] * 3, "yes"),
        # Three rounds at 1.00 and four at 0.70: the median round is 0.70 (totals: 0.83).
        ([1000.0] * 3 + [700.0] * 4, "**no**"),
    ],
)
def test_a_verdict_is_the_median_rounds(rounds: list[float], expected: str) -> None:
    results = _results(submit=900.0, poll=1900.0, e2e_p50=10.0, deliveries=900.0)
    results["baseline"]["insert_and_publish"]["rounds_rps"] = [1000.0] * len(rounds)
    results["api"]["submit"].update(rps=sum(rounds) / len(rounds), rounds_rps=rounds)

    assert _verdicts(results)["submit"] == expected


def test_a_figure_the_run_did_not_measure_is_not_judged() -> None:
    results = _results(submit=900.0, poll=1900.0, e2e_p50=10.0, deliveries=900.0)
    del results["api"]["submit"]

    assert _verdicts(results)["submit"] == "n/a"


def test_the_committed_report_is_rendered_from_the_committed_figures() -> None:
    # docs/benchmarks.md's generated section and bench/results.json come from the same run:
    # neither was edited by hand, nor one regenerated without the other.
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    section = doc[doc.index(MARK_BEGIN) : doc.index(MARK_END) + len(MARK_END)]

    assert render(_committed()).strip() == section.strip()
