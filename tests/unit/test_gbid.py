"""GB/T 28181 ID parsing, checking, explanation and allocation."""

from __future__ import annotations

import random

import pytest

from tests.conftest import TEST_DATA
from vms.catalog.gbid import (
    CAMERA_TYPE_CODES,
    INDUSTRY_CODES,
    NETWORK_CODES,
    TYPE_CODES,
    GbId,
    GbIdError,
    allocate_gb_ids,
    check_gb_id,
    explain_gb_id,
    parse_gb_id,
    short_civil_code,
)
from vms.geo.regions import read_admin_codes


@pytest.fixture(scope="module")
def admin_names() -> dict[str, str]:
    return {r.code: r.name for r in read_admin_codes(TEST_DATA / "admin")}


# --- parse ---------------------------------------------------------------------------------------------


def test_parse_wuhu_platform_example() -> None:
    gb = parse_gb_id("34020000001320000001")
    assert gb.raw == "34020000001320000001"
    assert gb.centre == "34020000"
    assert gb.civil_code == "340200"
    assert gb.grassroots == "00"
    assert gb.industry == "00"
    assert gb.type_code == "132"
    assert gb.network == "0"
    assert gb.serial == "000001"
    assert gb.serial_number == 1
    assert gb.prefix == "34020000001320"
    assert gb.is_camera


def test_parse_luozhuang_camera() -> None:
    gb = parse_gb_id("37131100001326000123")
    assert (gb.civil_code, gb.grassroots, gb.industry, gb.type_code, gb.network, gb.serial) == (
        "371311",
        "00",
        "00",
        "132",
        "6",
        "000123",
    )
    assert gb.is_camera
    assert str(gb) == "37131100001326000123"


def test_parse_strips_whitespace_and_full_width_digits() -> None:
    full_width = "３７１３１１００００１３２６０００１２３"
    assert parse_gb_id(f"  {full_width}\t") == parse_gb_id("37131100001326000123")
    assert parse_gb_id("\u300037131100001326000123 ").raw == "37131100001326000123"


def test_not_a_camera() -> None:
    assert not parse_gb_id("37131100001186000001").is_camera  # 118 = NVR
    assert parse_gb_id("37131100001316000001").is_camera  # 131 = analogue camera


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("3713110000132600012", "19 digits"),
        ("371311000013260001234", "21 digits"),
        ("3713110000132600012X", "non-digit"),
        ("37131100-0013260001", "non-digit"),
        ("3713110000132600012²", "non-digit"),  # str.isdigit() would accept the superscript
    ],
)
def test_parse_errors(value: str, fragment: str) -> None:
    with pytest.raises(GbIdError, match=fragment):
        parse_gb_id(value)


def test_gbid_error_is_value_error_and_dataclass_validates() -> None:
    assert issubclass(GbIdError, ValueError)
    with pytest.raises(GbIdError):
        GbId("123")
    with pytest.raises(AttributeError):
        parse_gb_id("37131100001326000123").raw = "x"  # type: ignore[misc]


# --- check ---------------------------------------------------------------------------------------------


def test_check_valid_ids() -> None:
    assert check_gb_id("37131100001326000123") == []
    assert check_gb_id("34020000001320000001") == []
    assert check_gb_id(" ３７１３１１００００１３２６０００１２３ ") == []


def test_check_format() -> None:
    assert check_gb_id("123") == ["ID-FORMAT"]
    assert check_gb_id("3713110000132600012X", governed="371311") == ["ID-FORMAT"]
    assert check_gb_id("") == ["ID-FORMAT"]


def test_check_civil_code_structure() -> None:
    assert check_gb_id("00000000001326000123") == ["ID-CIVIL-CODE"]
    assert check_gb_id("99131100001326000123") == ["ID-CIVIL-CODE"]  # 99 is not a province


def test_check_known_civil_codes(admin_names: dict[str, str]) -> None:
    known = set(admin_names)
    assert check_gb_id("37131100001326000123", known_civil_codes=known) == []
    # 371399 does not exist in Linyi.
    assert check_gb_id("37139900001326000123", known_civil_codes=known) == ["ID-CIVIL-CODE"]
    # The city is known as "3713" (4 digits); "371300" is not a 6-digit device prefix in that list.
    assert check_gb_id("37130000001326000123", known_civil_codes=known) == ["ID-CIVIL-CODE"]
    # ...unless the caller's list holds the padded GB/T 2260 form.
    assert check_gb_id("37130000001326000123", known_civil_codes=known | {"371300"}) == []


@pytest.mark.parametrize("governed", ["37", "3713", "371311", "371300", "370000", "37131100"])
def test_check_inside_region(governed: str) -> None:
    assert check_gb_id("37131100001326000123", governed=governed) == []


@pytest.mark.parametrize("governed", ["34", "3402", "371312", "371302", "37131101"])
def test_check_outside_region(governed: str) -> None:
    assert check_gb_id("37131100001326000123", governed=governed) == ["ID-OUTSIDE-REGION"]


@pytest.mark.parametrize("governed", ["3", "37131", "abc", "00", "991311"])
def test_check_bad_governed_raises(governed: str) -> None:
    with pytest.raises(GbIdError):
        check_gb_id("37131100001326000123", governed=governed)


@pytest.mark.parametrize(
    ("industry", "ok"),
    [
        ("00", True),
        ("14", True),
        ("15", False),
        ("39", False),
        ("40", True),
        ("45", True),
        ("46", False),
        ("99", False),
    ],
)
def test_check_industry(industry: str, ok: bool) -> None:
    problems = check_gb_id(f"37131100{industry}1326000123")
    assert problems == ([] if ok else ["ID-INDUSTRY"])


def test_check_type_and_network() -> None:
    assert check_gb_id("37131100001316000123") == []
    assert check_gb_id("37131100001186000123") == ["ID-TYPE"]
    assert check_gb_id("37131100002006000123") == ["ID-TYPE"]
    # Non-camera checks pass a different type set.
    assert check_gb_id("37131100001186000123", type_codes={"118"}) == []
    for digit in "012345678":
        assert check_gb_id(f"3713110000132{digit}000123") == []
    assert check_gb_id("37131100001329000123") == ["ID-NETWORK"]


def test_check_reports_every_problem_in_fixed_order() -> None:
    problems = check_gb_id("00000000991119000123", governed="371311", known_civil_codes={"371311"})
    assert problems == ["ID-CIVIL-CODE", "ID-OUTSIDE-REGION", "ID-INDUSTRY", "ID-TYPE", "ID-NETWORK"]


def test_short_civil_code() -> None:
    assert short_civil_code("371300") == "3713"
    assert short_civil_code("370000") == "37"
    assert short_civil_code("371311") == "371311"
    assert short_civil_code("100000") == "100000"  # the country code, not a province
    assert short_civil_code("SOUTHERN") == "SOUTHERN"


# --- explain -------------------------------------------------------------------------------------------


def test_explain_luozhuang(admin_names: dict[str, str]) -> None:
    info = explain_gb_id("37131100001326000123", region_names=admin_names)
    assert info["civil_code"] == "371311"
    assert info["civil_code_meaning"] == "罗庄区"
    assert info["industry"] == "00"
    assert info["industry_meaning"] == "public security: road"
    assert info["industry_meaning_zh"] == "社会治安路面接入"
    assert info["type_code"] == "132"
    assert info["type_code_meaning"] == "IP camera"
    assert info["network"] == "6"
    assert info["network_meaning"] == "e-government network"
    assert info["serial"] == "000123"
    assert info["serial_meaning"] == "serial 123"
    assert info["is_camera"] == "yes"


def test_explain_wuhu_uses_city_name_for_padded_code(admin_names: dict[str, str]) -> None:
    info = explain_gb_id("34020000001320000001", region_names=admin_names)
    # 340200 is the padded form of city 3402 (Wuhu); the admin list keys it by 4 digits.
    assert info["civil_code_meaning"] == admin_names["3402"] == "芜湖市"
    assert info["network_meaning"] == "monitoring/alarm private network"
    assert info["type_code_meaning_zh"] == "网络摄像机(IPC)"


def test_explain_unknown_codes_do_not_raise() -> None:
    info = explain_gb_id("37131100991999000000")
    assert info["industry_meaning"] == "unknown industry code"
    assert info["type_code_meaning"] == "unknown type code"
    assert info["network_meaning"].startswith("reserved")
    assert info["serial_meaning"].startswith("invalid")
    assert info["is_camera"] == "no"
    assert "civil_code_meaning" not in info  # no names given and the code is structurally fine
    with pytest.raises(GbIdError):
        explain_gb_id("not an id")


def test_code_tables_are_complete() -> None:
    expected_types = {
        "111",
        "112",
        "113",
        "114",
        "118",
        "121",
        "122",
        "130",
        "131",
        "132",
        "134",
        "135",
        "138",
        "200",
        "215",
        "216",
        "300",
        "400",
        *(str(c) for c in range(500, 506)),
    }
    assert expected_types <= set(TYPE_CODES)
    assert set(INDUSTRY_CODES) == {f"{i:02d}" for i in [*range(15), *range(40, 46)]}
    assert set(NETWORK_CODES) == set("012345678")
    assert {"131", "132"} == CAMERA_TYPE_CODES
    for table in (TYPE_CODES, INDUSTRY_CODES, NETWORK_CODES):
        assert all(en and zh for en, zh in table.values())


# --- allocate ------------------------------------------------------------------------------------------


def test_allocate_continues_after_highest_serial() -> None:
    existing = ["37131100001326000005", "37131100001326000123", "37131100001326000050"]
    assert allocate_gb_ids(existing, centre="37131100", count=2) == [
        "37131100001326000124",
        "37131100001326000125",
    ]


def test_allocate_ignores_other_prefixes_and_garbage() -> None:
    existing = [
        "37131100001326999000",  # same prefix as the request (used only in the second call)
        "37131100001316000900",  # type 131: another namespace
        "37131100041326000900",  # industry 04
        "37131101001326000900",  # grassroots 01
        "not an id",
        "",
    ]
    ids = allocate_gb_ids(existing[1:], centre="371311", count=1)
    assert ids == ["37131100001326000001"]
    # The first entry shares the prefix, so allocation continues after it.
    assert allocate_gb_ids(existing, centre="371311", count=1) == ["37131100001326999001"]


def test_allocate_pads_six_digit_centre_and_uses_parts() -> None:
    ids = allocate_gb_ids([], centre="371311", industry="04", type_code="131", network="5", count=1)
    assert ids == ["37131100041315000001"]
    gb = parse_gb_id(ids[0])
    assert (gb.centre, gb.industry, gb.type_code, gb.network) == ("37131100", "04", "131", "5")


def test_allocate_sees_full_width_existing_ids() -> None:
    existing = ["３７１３１１００００１３２６０００００７"]
    assert allocate_gb_ids(existing, centre="37131100", count=1) == ["37131100001326000008"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"centre": "3713110"},
        {"centre": "3713110000"},
        {"centre": "37131a00"},
        {"centre": "000000"},
        {"centre": "99131100"},
        {"centre": "371311", "industry": "99"},
        {"centre": "371311", "industry": "0"},
        {"centre": "371311", "type_code": "999"},
        {"centre": "371311", "network": "9"},
        {"centre": "371311", "network": "66"},
    ],
)
def test_allocate_validates_parts(kwargs: dict[str, str]) -> None:
    with pytest.raises(GbIdError):
        allocate_gb_ids([], count=1, **kwargs)


def test_allocate_zero_and_negative_count() -> None:
    assert allocate_gb_ids(["37131100001326000001"], centre="371311", count=0) == []
    with pytest.raises(GbIdError):
        allocate_gb_ids([], centre="371311", count=-1)


def test_allocate_fills_gaps_when_top_is_reached() -> None:
    existing = ["37131100001326999999", *(f"37131100001326{i:06d}" for i in range(1, 11))]
    assert allocate_gb_ids(existing, centre="37131100", count=2) == [
        "37131100001326000011",
        "37131100001326000012",
    ]


def test_allocate_raises_when_serial_space_exhausted() -> None:
    taken = [f"37131100001326{i:06d}" for i in range(1, 1_000_000)]
    with pytest.raises(GbIdError, match="exhausted"):
        allocate_gb_ids(taken, centre="37131100", count=1)
    del taken[4241]  # frees serial 004242
    assert allocate_gb_ids(taken, centre="37131100", count=1) == ["37131100001326004242"]
    with pytest.raises(GbIdError, match="1 free serials left, 2 requested"):
        allocate_gb_ids(taken, centre="37131100", count=2)


def test_allocate_never_collides_property() -> None:
    rng = random.Random(20240517)
    prefixes = ["37131100001326", "37131100001316", "37131101001326", "37130000001326"]
    for _ in range(200):
        existing: list[str] = []
        for _ in range(rng.randint(0, 300)):
            existing.append(f"{rng.choice(prefixes)}{rng.randint(1, 999_999):06d}")
        if rng.random() < 0.3:
            existing.append(f"37131100001326{999_999 - rng.randint(0, 5):06d}")  # force the gap-filling path
        count = rng.randint(1, 50)
        ids = allocate_gb_ids(existing, centre="371311", count=count)
        assert len(ids) == count
        assert len(set(ids)) == count
        assert not set(ids) & set(existing)
        same = [int(e[14:]) for e in existing if e.startswith("37131100001326")]
        highest = max(same, default=0)
        for new_id in ids:
            assert new_id.startswith("37131100001326")
            assert check_gb_id(new_id, governed="371311") == []
        serials = [int(i[14:]) for i in ids]
        room_above = 999_999 - highest
        if room_above >= count:
            assert serials == list(range(highest + 1, highest + 1 + count))
        else:
            assert serials[:room_above] == list(range(highest + 1, 1_000_000))


def test_allocate_among_100k_existing() -> None:
    rng = random.Random(7)
    existing = [f"3713110000132{rng.choice('56')}{rng.randint(1, 999_999):06d}" for _ in range(100_000)]
    ids = allocate_gb_ids(existing, centre="37131100", count=1000)
    assert len(set(ids)) == 1000
    assert not set(ids) & set(existing)


def test_check_empty_governed_means_unrestricted() -> None:
    assert check_gb_id("37131100001326000123", governed="") == []
    assert check_gb_id("37131100001326000123", governed=None) == []
