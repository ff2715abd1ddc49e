"""GB/T 28181 20-digit device and channel IDs: parse, check, explain and allocate.

Layout (DOMAIN.md section 1)::

    37131100 00 132 6 000123
    |      | |  |   | serial (000001-999999)
    |      | |  |   network (0-8; 9 reserved)
    |      | |  type (131 camera, 132 IP camera, ...)
    |      | industry (00-14, 40-45)
    |      grassroots unit (2 digits)
    civil code (6 digits, GB/T 2260)

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CAMERA_TYPE_CODES",
    "INDUSTRY_CODES",
    "NETWORK_CODES",
    "PROVINCE_CODES",
    "TYPE_CODES",
    "GbId",
    "GbIdError",
    "allocate_gb_ids",
    "check_gb_id",
    "explain_gb_id",
    "normalize_gb_id",
    "parse_gb_id",
    "short_civil_code",
]


class GbIdError(ValueError):
    """A value is not a usable GB/T 28181 ID (or an allocation request cannot be met)."""


# Industry codes (digits 9-10). 00-11 are the same in the 2016 and 2022 editions; 12-14 were added later;
# 40-45 were renamed by the 2022 edition, so both readings are given.
INDUSTRY_CODES: Mapping[str, tuple[str, str]] = {
    "00": ("public security: road", "社会治安路面接入"),
    "01": ("public security: community", "社会治安社区接入"),
    "02": ("public security: internal", "社会治安内部接入"),
    "03": ("public security: other", "社会治安其他接入"),
    "04": ("traffic: road", "交通路面接入"),
    "05": ("traffic: checkpoint", "交通卡口接入"),
    "06": ("traffic: internal", "交通内部接入"),
    "07": ("traffic: other", "交通其他接入"),
    "08": ("city management", "城市管理接入"),
    "09": ("health and environment", "卫生环保接入"),
    "10": ("commodity inspection and customs", "商检海关接入"),
    "11": ("education", "教育部门接入"),
    "12": ("civil aviation", "民航接入"),
    "13": ("railway", "铁路接入"),
    "14": ("shipping", "航运接入"),
    "40": ("other industry: agriculture, forestry, animal husbandry, fishery", "农林牧渔业接入"),
    "41": ("other industry: mining", "采矿业接入"),
    "42": ("other industry: manufacturing", "制造业接入"),
    "43": (
        "other industry: metallurgy (2016) / electricity, heat, gas and water (2022)",
        "冶金企业接入(2016) / 电力、热力、燃气及水生产和供应业接入(2022)",
    ),
    "44": (
        "other industry: electric power (2016) / construction (2022)",
        "电力企业接入(2016) / 建筑业接入(2022)",
    ),
    "45": (
        "other industry: gas (2016) / wholesale and retail (2022)",
        "燃气企业接入(2016) / 批发和零售业接入(2022)",
    ),
}

# Type codes (digits 11-13) listed in DOMAIN.md section 1.
TYPE_CODES: Mapping[str, tuple[str, str]] = {
    "111": ("DVR", "数字视频录像机(DVR)"),
    "112": ("video server", "视频服务器"),
    "113": ("encoder", "编码器"),
    "114": ("decoder", "解码器"),
    "118": ("NVR", "网络视频录像机(NVR)"),
    "121": ("checkpoint (video bayonet)", "视频卡口"),
    "122": ("multi-lens device", "多目设备"),
    "130": ("HVR", "混合硬盘录像机(HVR)"),
    "131": ("camera", "摄像机"),
    "132": ("IP camera", "网络摄像机(IPC)"),
    "134": ("alarm input device", "报警输入设备"),
    "135": ("alarm output device", "报警输出设备"),
    "138": ("mobile transmission device", "移动传输设备"),
    "200": ("central SIP server", "中心信令控制服务器"),
    "215": ("business group", "业务分组"),
    "216": ("virtual organisation", "虚拟组织"),
    "300": ("central user", "中心用户"),
    "400": ("terminal user", "终端用户"),
    "500": ("external platform: video application platform", "平台外接服务器: 视频图像信息综合应用平台"),
    "501": (
        "external platform: operation and maintenance platform",
        "平台外接服务器: 视频图像信息运维管理平台",
    ),
    "502": ("external platform: video analysis system", "平台外接服务器: 视频图像分析系统"),
    "503": ("external platform: video image database", "平台外接服务器: 视频图像信息数据库"),
    "504": ("external platform", "平台外接服务器"),
    "505": ("external platform: video analysis device", "平台外接服务器: 视频图像分析设备"),
}

CAMERA_TYPE_CODES: frozenset[str] = frozenset({"131", "132"})

# Network digit (14th), 2016 edition wording; the 2022 edition renames several of these.
NETWORK_CODES: Mapping[str, tuple[str, str]] = {
    "0": ("monitoring/alarm private network", "监控报警专网"),
    "1": ("monitoring/alarm private network", "监控报警专网"),
    "2": ("monitoring/alarm private network", "监控报警专网"),
    "3": ("monitoring/alarm private network", "监控报警专网"),
    "4": ("monitoring/alarm private network", "监控报警专网"),
    "5": ("public-security information network", "公安信息网"),
    "6": ("e-government network", "政务网"),
    "7": ("Internet", "互联网"),
    "8": ("social-resource access network", "社会资源接入网"),
}

# First two digits of GB/T 2260 codes: a fixed set, so an ID can be sanity-checked without a code list.
PROVINCE_CODES: frozenset[str] = frozenset(
    {
        *("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37"),
        *("41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65"),
        *("71", "81", "82"),
    }
)

_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_ASCII_DIGITS = frozenset("0123456789")
_MAX_SERIAL = 999_999


def _is_ascii_digits(value: str) -> bool:
    # str.isdigit() alone also accepts superscripts and other scripts' digits, which are not valid here.
    return value.isascii() and value.isdigit()


def normalize_gb_id(value: str) -> str:
    """Strip whitespace and turn full-width digits (typed with a Chinese IME) into ASCII digits."""
    return value.strip().translate(_FULLWIDTH_DIGITS)


@dataclass(frozen=True, slots=True)
class GbId:
    """A syntactically valid 20-digit ID (``raw`` is the normalised ASCII form)."""

    raw: str

    def __post_init__(self) -> None:
        if len(self.raw) != 20 or not _is_ascii_digits(self.raw):
            raise GbIdError(f"GB/T 28181 ID must be 20 ASCII digits, got {self.raw!r}")

    @property
    def centre(self) -> str:
        return self.raw[0:8]

    @property
    def civil_code(self) -> str:
        return self.raw[0:6]

    @property
    def grassroots(self) -> str:
        return self.raw[6:8]

    @property
    def industry(self) -> str:
        return self.raw[8:10]

    @property
    def type_code(self) -> str:
        return self.raw[10:13]

    @property
    def network(self) -> str:
        return self.raw[13]

    @property
    def serial(self) -> str:
        return self.raw[14:20]

    @property
    def prefix(self) -> str:
        """The first 14 digits: everything but the serial (the allocation namespace)."""
        return self.raw[0:14]

    @property
    def serial_number(self) -> int:
        return int(self.serial)

    @property
    def is_camera(self) -> bool:
        return self.type_code in CAMERA_TYPE_CODES

    def __str__(self) -> str:
        return self.raw


def parse_gb_id(value: str) -> GbId:
    """Parse a 20-digit ID; raises GbIdError saying what is wrong. Only the syntax is checked here."""
    if not isinstance(value, str):
        raise GbIdError(f"GB/T 28181 ID must be a string, got {type(value).__name__}")
    text = normalize_gb_id(value)
    if not text:
        raise GbIdError("GB/T 28181 ID is empty")
    bad = sorted({c for c in text if c not in _ASCII_DIGITS})
    if bad:
        shown = "".join(bad[:5])
        raise GbIdError(f"GB/T 28181 ID {value!r} contains non-digit characters: {shown!r}")
    if len(text) != 20:
        raise GbIdError(f"GB/T 28181 ID {value!r} has {len(text)} digits, expected 20")
    return GbId(text)


def short_civil_code(code: str) -> str:
    """``371300`` -> ``3713``, ``370000`` -> ``37``, ``371311001000`` -> ``371311001``; other codes unchanged.

    GB/T 2260 pads province and city codes with ``00`` pairs to 6 digits while the admin code files (and
    most region trees) use the 2/4-digit form; prefix tests need the short form. ``100000`` (the country)
    is kept because ``10`` is not a province.
    """
    text = code.strip()
    if len(text) == 12 and _is_ascii_digits(text):
        # Statistics-bureau (and official boundary data) form: 6 district, 3 township, 3 village digits.
        if text.endswith("000"):
            text = text[:9]
        if len(text) == 9 and text.endswith("000"):
            text = text[:6]
    if not _is_ascii_digits(text) or len(text) % 2:
        return text
    while len(text) > 2 and text.endswith("00"):
        text = text[:-2]
    if len(text) == 2 and text not in PROVINCE_CODES:
        return code.strip()
    return text


def check_gb_id(
    value: str,
    *,
    governed: str | None = None,
    known_civil_codes: Container[str] | None = None,
    type_codes: Container[str] = CAMERA_TYPE_CODES,
) -> list[str]:
    """Problem codes for one ID (empty list = valid), in a fixed order.

    ``governed``: 2/4/6/8-digit code of the governed region (``371311``; ``371300`` is read as city
    ``3713``). ``known_civil_codes``: valid 6-digit civil codes; the ID's 6-digit code must be a member (a
    known ``3713`` does not make ``371300`` valid: a device belongs to a concrete division). ``type_codes``
    defaults to cameras (131/132).
    """
    try:
        gb = parse_gb_id(value)
    except GbIdError:
        # Nothing else can be read reliably from a malformed ID.
        return ["ID-FORMAT"]
    problems: list[str] = []
    civil = gb.civil_code
    if (
        civil == "000000"
        or civil[:2] not in PROVINCE_CODES
        or (known_civil_codes is not None and civil not in known_civil_codes)
    ):
        problems.append("ID-CIVIL-CODE")
    if governed:  # None or "" (an unset setting) means no region restriction
        region = _governed_prefix(governed)
        target = gb.centre if len(region) > 6 else civil
        if not target.startswith(region):
            problems.append("ID-OUTSIDE-REGION")
    if gb.industry not in INDUSTRY_CODES:
        problems.append("ID-INDUSTRY")
    if gb.type_code not in type_codes:
        problems.append("ID-TYPE")
    if gb.network not in NETWORK_CODES:
        problems.append("ID-NETWORK")
    return problems


def _governed_prefix(governed: str) -> str:
    text = normalize_gb_id(governed)
    if len(text) not in (2, 4, 6, 8) or not _is_ascii_digits(text):
        raise GbIdError(f"governed region must be a 2, 4, 6 or 8 digit civil code, got {governed!r}")
    short = short_civil_code(text)
    if short[:2] not in PROVINCE_CODES:
        raise GbIdError(f"governed region {governed!r} does not start with a province code")
    return short


def explain_gb_id(value: str, *, region_names: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each part of the ID with its meaning (``*_meaning`` English, ``*_meaning_zh`` Chinese).

    Unknown codes are reported as such rather than raising, so a bad ID can still be shown to a user;
    only a malformed ID (not 20 digits) raises GbIdError. ``region_names`` maps civil codes (6, 4 or 2
    digits) to names; the most specific match names the civil code.
    """
    gb = parse_gb_id(value)
    out: dict[str, str] = {
        "id": gb.raw,
        "centre": gb.centre,
        "civil_code": gb.civil_code,
        "province": gb.civil_code[:2],
        "city": gb.civil_code[:4],
    }
    civil_name = _civil_name(gb.civil_code, region_names)
    if civil_name is not None:
        out["civil_code_meaning"] = civil_name
    elif gb.civil_code[:2] not in PROVINCE_CODES or gb.civil_code == "000000":
        out["civil_code_meaning"] = "invalid civil code"
    out["grassroots"] = gb.grassroots
    out["grassroots_meaning"] = (
        "the division itself (no grassroots unit)" if gb.grassroots == "00" else f"grassroots unit {gb.grassroots}"
    )
    _put(out, "industry", gb.industry, INDUSTRY_CODES, "unknown industry code")
    _put(out, "type_code", gb.type_code, TYPE_CODES, "unknown type code")
    _put(out, "network", gb.network, NETWORK_CODES, "reserved / invalid network code")
    out["serial"] = gb.serial
    out["serial_meaning"] = f"serial {gb.serial_number}" if gb.serial_number else "invalid serial 000000"
    out["is_camera"] = "yes" if gb.is_camera else "no"
    return out


def _civil_name(civil: str, region_names: Mapping[str, str] | None) -> str | None:
    if not region_names:
        return None
    # The admin code files key provinces and cities by 2/4 digits, GB/T 2260 by padded 6 digits: try both.
    for key in (civil, short_civil_code(civil), civil[:4], civil[:4] + "00", civil[:2], civil[:2] + "0000"):
        name = region_names.get(key)
        if name:
            return name
    return None


def _put(out: dict[str, str], key: str, code: str, table: Mapping[str, tuple[str, str]], unknown: str) -> None:
    out[key] = code
    meaning = table.get(code)
    out[f"{key}_meaning"] = meaning[0] if meaning else unknown
    if meaning:
        out[f"{key}_meaning_zh"] = meaning[1]


def allocate_gb_ids(
    existing: Iterable[str],
    *,
    centre: str,
    industry: str = "00",
    type_code: str = "132",
    network: str = "6",
    count: int,
) -> list[str]:
    """``count`` new IDs (centre, industry, type, network, serial) colliding with nothing in ``existing``.

    Serials continue after the highest serial already used under the same 14-digit prefix, so IDs of
    retired devices are not handed out again while there is room; when the top of the range is reached the
    lowest free serials are used. Raises GbIdError if fewer than ``count`` serials are free (nothing is
    allocated then). ``centre`` may be 6 digits (the grassroots part becomes ``00``). Malformed entries of
    ``existing`` are ignored: they cannot collide with a well-formed ID.
    """
    if count < 0:
        raise GbIdError(f"count must be >= 0, got {count}")
    prefix = _allocation_prefix(centre, industry, type_code, network)
    if count == 0:
        return []
    used: set[int] = set()
    for item in existing:
        if not isinstance(item, str):
            continue
        # Fast path for the usual clean ASCII ID; normalise only what needs it.
        text = item if len(item) == 20 and item.isascii() else normalize_gb_id(item)
        if len(text) == 20 and text.startswith(prefix):
            serial = text[14:]
            if serial.isascii() and serial.isdigit():
                used.add(int(serial))
    used.discard(0)  # 000000 is not a valid serial and never allocated, so it does not count as used
    free_total = _MAX_SERIAL - len(used)
    if free_total < count:
        raise GbIdError(f"serial space of {prefix} exhausted: {free_total} free serials left, {count} requested")
    highest = max(used, default=0)
    serials: list[int] = []
    # Normal case: continue after the highest serial (nothing above it is taken).
    nxt = highest + 1
    while len(serials) < count and nxt <= _MAX_SERIAL:
        serials.append(nxt)
        nxt += 1
    # Top reached: fill the lowest gaps.
    gap = 1
    while len(serials) < count:
        if gap not in used:
            serials.append(gap)
        gap += 1
    return [f"{prefix}{s:06d}" for s in serials]


def _allocation_prefix(centre: str, industry: str, type_code: str, network: str) -> str:
    centre_text = normalize_gb_id(centre)
    if len(centre_text) == 6:
        centre_text += "00"
    if len(centre_text) != 8 or not _is_ascii_digits(centre_text):
        raise GbIdError(f"centre must be 8 digits (or a 6-digit civil code), got {centre!r}")
    civil = centre_text[:6]
    if civil == "000000" or civil[:2] not in PROVINCE_CODES:
        raise GbIdError(f"centre {centre!r} does not start with a valid civil code")
    if industry not in INDUSTRY_CODES:
        raise GbIdError(f"industry {industry!r} is not a known industry code (00-14, 40-45)")
    if type_code not in TYPE_CODES:
        raise GbIdError(f"type code {type_code!r} is not a known type code")
    if network not in NETWORK_CODES:
        raise GbIdError(f"network {network!r} must be one digit 0-8 (9 is reserved)")
    return centre_text + industry + type_code + network
