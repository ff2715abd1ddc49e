"""The benchmarks' shared record of figures, and the one table `make bench` prints at the end.

Each benchmark calls ``record(...)`` for every figure it measures (ours, the floor or baseline of the same run, the
issue's goal); the figures go, one JSON object a line, to the file named by VMS_BENCH_RESULTS (tests/bench/conftest.py
sets it for the session; unset, ``record`` does nothing beyond returning the row). At the end of the session the
conftest prints ``table(...)`` and writes it to .bench/latest.md. Nothing here asserts on time: a goal is reported
as met or not met.

Sizes: ``size("VMS_BENCH_ROWS", 100_000, quick=2_000)`` reads the variable, else the quick size when VMS_BENCH_QUICK=1
(small sizes that check the plumbing in a minute or two; their figures mean nothing), else the full size.
VMS_BENCH_FULL=1 adds what takes minutes (the 1,000,000-row import's peak memory).

Print the table of a results file: .venv/bin/python -m tests.bench.report .bench/results.jsonl
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS_ENV = "VMS_BENCH_RESULTS"
QUICK_ENV = "VMS_BENCH_QUICK"
FULL_ENV = "VMS_BENCH_FULL"


def quick() -> bool:
    return os.environ.get(QUICK_ENV, "").strip() not in ("", "0")


def full() -> bool:
    """VMS_BENCH_FULL=1 (`make bench-full`): also the runs that take minutes (the 1,000,000-row import)."""
    return os.environ.get(FULL_ENV, "").strip() not in ("", "0")


def size(env: str, full: int, quick_size: int) -> int:
    """A benchmark size: the variable ``env`` if set, else ``quick_size`` in quick mode, else ``full``."""
    value = os.environ.get(env, "").strip()
    if value:
        return int(value)
    return quick_size if quick() else full


def sizes(env: str, full: str, quick_sizes: str) -> list[int]:
    """A comma-separated list of sizes, chosen like ``size``."""
    value = os.environ.get(env, "").strip() or (quick_sizes if quick() else full)
    return [int(n) for n in value.split(",") if n.strip()]


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    peak_mb: float | None = None
    max_value: float | None = None
    min_value: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    goal_note: str = ""
    group: str = ""
    holds: bool | None = None

    @property
    def ratio(self) -> float | None:
        """ours / baseline (a time: how many floors we take; a rate: how many baselines we do)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def goal(self) -> str:
        parts = []
        if self.max_value is not None:
            parts.append(f"< {_num(self.max_value)} {self.unit}")
        if self.min_value is not None:
            parts.append(f">= {_num(self.min_value)} {self.unit}")
        if self.max_ratio is not None:
            parts.append(f"ratio <= {_num(self.max_ratio)}x")
        if self.min_ratio is not None:
            parts.append(f"ratio >= {_num(self.min_ratio)}x")
        text = " and ".join(parts)
        if self.goal_note:
            text = f"{text} ({self.goal_note})" if text else self.goal_note
        return text

    def met(self) -> bool | None:
        """Whether every bound of the goal holds; None when the figure has no goal."""
        checks: list[bool] = [] if self.holds is None else [self.holds]
        if self.max_value is not None:
            checks.append(self.ours < self.max_value)
        if self.min_value is not None:
            checks.append(self.ours >= self.min_value)
        ratio = self.ratio
        if self.max_ratio is not None:
            checks.append(ratio is not None and ratio <= self.max_ratio)
        if self.min_ratio is not None:
            checks.append(ratio is not None and ratio >= self.min_ratio)
        return all(checks) if checks else None


def record(
    figure: str,
    ours: float,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_name: str = "",
    peak_mb: float | None = None,
    max_value: float | None = None,
    min_value: float | None = None,
    max_ratio: float | None = None,
    min_ratio: float | None = None,
    goal_note: str = "",
    group: str = "",
    holds: bool | None = None,
) -> Row:
    """Record one figure (appended to the file named by VMS_BENCH_RESULTS, if set) and return it.

    ``ours`` and ``baseline`` are in ``unit``; the goal is every bound given (values in ``unit``, ratios of
    ours / baseline); ``goal_note`` is text beside it (or the whole goal when it has no number); ``holds`` is a
    goal without a number (the note's) checked by the caller."""
    row = Row(figure, float(ours), unit, None if baseline is None else float(baseline), baseline_name,
              None if peak_mb is None else float(peak_mb), max_value, min_value, max_ratio, min_ratio, goal_note,
              group, holds)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
    return row


def load(path: Path) -> list[Row]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data: dict[str, Any] = json.loads(line)
            rows.append(Row(**data))
    return rows


def _num(x: float) -> str:
    """A figure with about three significant digits, thousands separated."""
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    if ax >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2g}"


def table(rows: list[Row]) -> str:
    """One markdown table: figure, ours, floor or baseline, ratio, peak memory, goal, met."""
    head = ["figure", "ours", "floor or baseline", "ratio", "peak memory", "goal", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        base = ""
        if r.baseline is not None:
            base = f"{_num(r.baseline)} {r.unit}"
            if r.baseline_name:
                base += f" ({r.baseline_name})"
        elif r.baseline_name:
            base = r.baseline_name
        ratio = r.ratio
        met = r.met()
        cells = [
            f"{r.group}: {r.figure}" if r.group else r.figure,
            f"{_num(r.ours)} {r.unit}",
            base,
            "" if ratio is None else f"{_num(ratio)}x",
            "" if r.peak_mb is None else f"{_num(r.peak_mb)} MB",
            r.goal(),
            "" if met is None else ("met" if met else "NOT MET") + (" (quick)" if quick() else ""),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    with_goal = [m for r in rows if (m := r.met()) is not None]
    lines.append("")
    lines.append(f"goals met: {sum(with_goal)} of {len(with_goal)}; ratio = ours / floor or baseline")
    if quick():
        lines.append("quick mode: small sizes, the goals are for full sizes; these verdicts check the plumbing only")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(load(Path(sys.argv[1]))))
