"""The real-SDK matrix: which SDK and provider, given credentials of which lifetime, fetches them
how often, and whether credwatch flags it. `test_sdk_matrix.py` measures it; `write_table` turns
its results into the table in docs/sdk-behaviour.md (between the markers), so the table is always
what the suite measured, never typed by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk-behaviour.md"
BEGIN = "<!-- sdk-matrix:begin (written by tests/scenarios/test_sdk_matrix.py) -->"
END = "<!-- sdk-matrix:end -->"

# The storm rule the scenario agent runs with (conftest.STORM_ARGS) and the agent's defaults.
WINDOW, MIN_FETCHES, FACTOR, VALID_MARGIN = 300.0, 5, 10.0, 60.0


def expected_storm(fetches: list[tuple[float, float]]) -> tuple[int, bool]:
    """(early fetches, storm flag) by credwatch's rule (docs/metrics.md), from the server's own
    log: (time served, expiry handed out) for each credential document, in order."""
    early: list[float] = []
    valid_until = lifetime = None
    storm = False

    def evaluate(now):
        nonlocal storm
        while early and now - early[0] > WINDOW:
            early.pop(0)
        per_lifetime = float("inf") if lifetime is None else len(early) / WINDOW * lifetime
        storm = len(early) >= MIN_FETCHES and per_lifetime >= FACTOR

    total_early = 0
    for served, expires in fetches:
        if valid_until is not None and valid_until - served > VALID_MARGIN:
            early.append(served)
            total_early += 1
        evaluate(served)
        valid_until, lifetime = expires, max(expires - served, 1.0)
        evaluate(served)
    return total_early, storm


@dataclasses.dataclass
class Cell:
    sdk: str
    provider: str
    lifetime: str
    calls: int
    served: int = 0
    early: int = 0
    storm_expected: bool = False
    exported: int | None = None
    storm_flag: int | None = None
    note: str = ""
    # The User-Agent product token(s) the server saw on credential fetches, the `sdk` label(s)
    # credwatch gave them, and the label the test expects.
    user_agent: str = ""
    label: str = ""
    label_expected: str = ""

    @property
    def agrees(self) -> bool:
        return (self.exported == self.served and self.storm_flag == int(self.storm_expected)
                and self.label == self.label_expected)


def render(cells: list[Cell]) -> str:
    rows = [
        "| SDK | provider | credentials live | API calls | credential fetches (server) | "
        "early fetches | storm by the rule | credwatch: fetches | credwatch: storm flag | "
        "User-Agent (server log) | credwatch: sdk | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        exported = "—" if c.exported is None else str(c.exported)
        flag = "—" if c.storm_flag is None else ("**1**" if c.storm_flag else "0")
        verdict = "✓" if c.agrees else "✗ " + c.note
        rows.append(
            f"| {c.sdk} | {c.provider} | {c.lifetime} | {c.calls} | {c.served} | {c.early} | "
            f"{'yes' if c.storm_expected else 'no'} | {exported} | {flag} | "
            f"{'`' + c.user_agent + '`' if c.user_agent else '—'} | {c.label or '—'} | {verdict} |")
    return "\n".join(rows)


def write_table(cells: list[Cell], doc: Path = DOC) -> None:
    """Replaces the table between the markers in `doc` (the rest of the page is prose)."""
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + render(cells) + "\n" + text[end:])
