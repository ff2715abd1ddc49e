"""TEXT-DAMAGED: names, makers and addresses damaged by a wrong character encoding, without false positives on
real Chinese names (every township name of China, Luozhuang's townships, real camera names)."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from vms.catalog.mojibake import damage, is_damaged
from vms.inventory.quality import RULES, QualityContext, check_camera

REPO = Path(__file__).resolve().parents[2]
TOWNSHIPS = REPO / "vms/data/luozhuang_townships.csv"
STREETS = REPO / "tests/data/admin/streets.csv"  # 41,000 real township names (GB/T 2260 style)

CAMERA_NAMES = (
    "罗庄区沂河路与湖北路交叉口东",
    "罗庄区沂河路与双月湖路交叉口东",
    '沂蒙路与通达路口东 <北> & "南"',
    "盛庄街道办事处门口(球机)",
    "傅庄街道 金三角广场 2号杆",
    "册山街道册山村村委西50米",
    "褚墩镇政府大院内-人脸卡口",
    "黄山镇G206国道K327+500",
    "高都街道湖北路罗庄一中南门",
    "罗庄区公安分局指挥中心1楼大厅",
    "临沂市罗庄区沂堂镇沂堂村（东）",
    "Ｋ12＋300 西向东",
    "朝向45°东南",
    "海康威视",
    "浙江大华技术股份有限公司",
    "DS-2DE4425IW-DE(T5)",
    "Hikvision®",
    "Dahua™ IPC-HFW2431S",
    "Aberdeen Praya Road near Aberdeen Harbour",
    "Café de Coral, Nathan Road",
    "São Paulo Conceição",
    "Zürich Straße 5",
    "Ærøskøbing Ångström",
    "Cruce Peñalolén – Av. Grecia",
    "Größe 3/4",
)


def township_names() -> Iterator[str]:
    for path in (TOWNSHIPS, STREETS):
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield row["name"]


def test_real_names_are_not_damaged() -> None:
    names = [*township_names(), *CAMERA_NAMES]
    assert len(names) > 40_000
    assert "罗庄街道" in names and "褚墩镇" in names
    flagged = {n: damage(n) for n in names if is_damaged(n)}
    assert flagged == {}


def test_long_real_addresses_are_not_damaged() -> None:
    # Long text gives chance byte patterns more room: addresses made of up to eight real names in a row.
    names = list(township_names())
    rng = random.Random(28181)
    addresses = ["".join(rng.sample(names, rng.randint(2, 8))) for _ in range(5000)]
    assert [a for a in addresses if is_damaged(a)] == []


def wrong_decodings(text: str) -> dict[str, str]:
    """The damage real transfers do: bytes of one encoding read as another."""
    utf8, gbk = text.encode("utf-8"), text.encode("gb18030")
    return {
        "UTF-8 read as GBK": utf8.decode("gbk", errors="replace"),
        "UTF-8 read as GB18030, bad bytes dropped": utf8.decode("gb18030", errors="ignore"),
        "UTF-8 read as Latin-1": utf8.decode("latin-1"),
        "UTF-8 read as Windows-1252": utf8.decode("cp1252", errors="replace"),
        "GBK read as UTF-8": gbk.decode("utf-8", errors="replace"),
        "GBK read as Latin-1": gbk.decode("latin-1"),
        "GBK read as Windows-1252": gbk.decode("cp1252", errors="replace"),
        "UTF-8 twice (Latin-1 in between)": utf8.decode("latin-1").encode("utf-8").decode("latin-1"),
        "written to an ASCII column": text.encode("ascii", errors="replace").decode("ascii"),
    }


@pytest.mark.parametrize("name", [n for n in CAMERA_NAMES if not n.isascii() and any(c >= "\u4e00" for c in n)])
def test_wrong_decodings_of_camera_names_are_damaged(name: str) -> None:
    missed = {how: text for how, text in wrong_decodings(name).items() if text != name and not is_damaged(text)}
    assert missed == {}


def test_wrong_decodings_of_township_names_are_damaged() -> None:
    tried = missed = 0
    for name in township_names():
        for text in wrong_decodings(name).values():
            tried += 1
            missed += not is_damaged(text)
    # Only a few two-character names lose too much when bad bytes are dropped to be recognised.
    assert tried > 300_000
    assert missed / tried < 0.002, (missed, tried)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("鍗楁柟", "UTF-8 read as GBK"),  # 南方
        ("Ã©cole", "UTF-8 read as Latin-1"),  # école
        ("æœªçŸ¥", "UTF-8 read as Latin-1"),  # 未知
        ("ÂÞ×¯Çø", "GBK read as Latin-1"),  # 罗庄区
        ("罗庄区\ufffd\ufffd路口", "U+FFFD"),
        ("锟斤拷锟斤拷", "锟斤拷"),
        ("烫烫烫烫烫烫", "烫烫烫"),
        ("????路口东", "question marks"),
        ("??", "question marks"),
    ],
)
def test_known_damage(text: str, why: str) -> None:
    reason = damage(text)
    assert reason is not None and why in reason


def test_quality_rule_on_names_makers_models_and_addresses() -> None:
    ctx = QualityContext()
    good = {"id": 1, "name": "罗庄区沂河路与湖北路交叉口东", "manufacturer": "海康威视", "address": "罗庄街道湖北路"}
    assert "TEXT-DAMAGED" not in check_camera(good, ctx)
    assert RULES["TEXT-DAMAGED"][0] == 6
    for field in ("name", "manufacturer", "model", "address"):
        damaged = {**good, field: "罗庄区沂河路".encode().decode("gbk", errors="replace")}
        assert "TEXT-DAMAGED" in check_camera(damaged, ctx), field
    # Other text fields are not this rule's business.
    assert "TEXT-DAMAGED" not in check_camera({**good, "contact_info": "Ã©"}, ctx)
