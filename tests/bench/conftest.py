"""Benchmark session: figures recorded through tests/bench/report.py, printed as one table at the end.

The table also goes to .bench/latest.md (VMS_BENCH_TABLE names another file), the raw figures to
.bench/results.jsonl (VMS_BENCH_RESULTS). `make bench` runs this; tests/bench is never collected by the test suite.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import pytest

from tests.bench import report
from tests.conftest import test_data  # noqa: F401  (the fixture, for benchmarks run on their own)

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    path = Path(os.environ.get(report.RESULTS_ENV) or REPO / ".bench" / "results.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")  # this session's figures only
    os.environ[report.RESULTS_ENV] = str(path)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = report.load(Path(os.environ[report.RESULTS_ENV]))
    missing = [
        f"{rep.nodeid} ({outcome})"
        for outcome in ("failed", "error", "skipped")
        for rep in terminalreporter.stats.get(outcome, [])
        if getattr(rep, "nodeid", "")
    ]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "QUICK mode (VMS_BENCH_QUICK=1: small sizes, checks the plumbing only)" if report.quick() else "full sizes"
    head = (f"vms benchmarks, {when}, commit {_commit()}, {os.cpu_count()} cores, Python {platform.python_version()},"
            f" {mode}")
    text = "\n".join([head, "", report.table(rows)])
    if missing:
        text += "\n\nnot measured (benchmark failed or skipped): " + "; ".join(missing)
    out = Path(os.environ.get("VMS_BENCH_TABLE") or REPO / ".bench" / "latest.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    terminalreporter.write_sep("=", "benchmark figures")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(table written to {out})")
