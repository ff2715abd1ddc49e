"""The fast path of the mojibake detector (text that cannot undo to two hanzi is passed without decoding) gives the
same verdicts as the full check, on real names, long addresses, camera ledger text and damaged text of every kind."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

from vms.catalog import mojibake
from vms.catalog.mojibake import REPLACEMENT, damage

REPO = Path(__file__).resolve().parents[2]
NAMES = (
    REPO / "vms/data/luozhuang_townships.csv",
    REPO / "tests/data/admin/streets.csv",
    REPO / "tests/data/admin/areas.csv",
)


def real_names() -> Iterator[str]:
    for path in NAMES:
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield row["name"]


def gbk_verdict(text: str) -> bool:
    """The GBK branch as it was before the fast path: decode everything, then count (the reference)."""
    fixed = text.encode("gb18030").decode("utf-8", errors="replace")
    lost = fixed.count(REPLACEMENT)
    if len(fixed) - lost < max(2, lost / 2):
        return False
    hanzi = len(mojibake._CJK.findall(fixed))
    return hanzi >= 2 and lost <= 2 * hanzi


def samples() -> list[str]:
    names = list(real_names())
    rng = random.Random(7)
    addresses = ["".join(rng.sample(names, rng.randint(2, 8))) for _ in range(5000)]
    ledger = [f"罗庄区{street}{i}号点位" for i, street in enumerate(names[:3000])]
    damaged = [t.encode("utf-8").decode("gbk", errors="replace") for t in names[:5000] + addresses[:2000]]
    # A GBK reader that dropped or replaced an odd byte.
    cut = [t.encode("utf-8")[:-1].decode("gbk", errors="replace") for t in names[5000:7000]]
    return [*names, *addresses, *ledger, *damaged, *cut]


def test_the_prefilter_never_passes_text_the_full_check_flags() -> None:
    texts = samples()
    assert len(texts) > 60_000
    passed = flagged = 0
    for text in texts:
        raw = text.encode("gb18030")
        if mojibake._TWO_UTF8_HANZI.search(raw) is None:
            passed += 1
            assert not gbk_verdict(text), text  # what the fast path lets through, the full check passes too
        elif gbk_verdict(text):
            flagged += 1
    # The fast path does the work for most real text, and damaged text still reaches the full check.
    assert passed > len(texts) // 2
    assert flagged > 6000


def test_verdicts_are_those_of_the_full_check() -> None:
    for text in samples():
        if text.isascii() or mojibake._MARKS.search(text) or mojibake._BEYOND_1252.search(text) is None:
            continue  # other branches, unchanged
        expected = gbk_verdict(text)
        assert (damage(text) is not None) == expected, text


def test_known_damage_is_still_found() -> None:
    assert damage("鍗楁柟") is not None  # 南方, UTF-8 read as GBK
    assert damage("缃楀簞鍖") is not None  # 罗庄区 with its last byte lost
    assert damage("罗庄区通达路1号点位") is None
    assert damage("海康威视") is None
