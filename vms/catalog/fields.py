"""The camera record's fields: GB/T 28181 catalog ("one camera, one file") plus what ONVIF reports.

One registry drives import column mapping, value parsing, export, the database columns and the quality
rules, so that a field added here flows everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    # A code from a value set; a few catalog fields hold several codes separated by "/".
    ENUM = "enum"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # attribute / column name
    kind: Kind
    xml: str | None = None  # element name in a GB/T 28181 Catalog Item (None: not a catalog field)
    values: frozenset[str] | None = None  # allowed codes for ENUM fields
    multi: bool = False  # ENUM holding several codes joined by "/"
    max_len: int = 255
    identity: bool = False  # used to recognise the same camera across sources
    label_zh: str = ""


def _codes(*values: str | int) -> frozenset[str]:
    return frozenset(str(v) for v in values)


def _range(lo: int, hi: int) -> frozenset[str]:
    return frozenset(str(v) for v in range(lo, hi + 1))


F = Field
K = Kind

FIELDS: tuple[Field, ...] = (
    # --- GB/T 28181 catalog core ---
    F("device_id", K.TEXT, "DeviceID", max_len=20, identity=True, label_zh="设备编码"),
    F("name", K.TEXT, "Name", label_zh="设备名称"),
    F("manufacturer", K.TEXT, "Manufacturer", label_zh="设备厂商"),
    F("model", K.TEXT, "Model", label_zh="设备型号"),
    F("owner", K.TEXT, "Owner", label_zh="设备归属"),
    F("civil_code", K.TEXT, "CivilCode", max_len=12, label_zh="行政区域"),
    F("block", K.TEXT, "Block", label_zh="警区"),
    F("address", K.TEXT, "Address", max_len=512, label_zh="安装地址"),
    F("parental", K.ENUM, "Parental", values=_codes(0, 1), label_zh="是否有子设备"),
    F("parent_id", K.TEXT, "ParentID", max_len=64, label_zh="父设备编码"),
    F("register_way", K.ENUM, "RegisterWay", values=_range(1, 4), label_zh="注册方式"),
    F("secrecy", K.ENUM, "Secrecy", values=_codes(0, 1), label_zh="保密属性"),
    F("ip_address", K.TEXT, "IPAddress", max_len=64, label_zh="IP地址"),
    F("port", K.INT, "Port", label_zh="端口"),
    F("status", K.ENUM, "Status", values=_codes("ON", "OFF", "DEFECT"), label_zh="设备状态"),  # DEFECT: vms.health
    F("longitude", K.FLOAT, "Longitude", label_zh="经度"),
    F("latitude", K.FLOAT, "Latitude", label_zh="纬度"),
    # --- catalog Info block ---
    F("ptz_type", K.ENUM, "PTZType", values=_range(1, 7), label_zh="摄像机类型"),
    F("room_type", K.ENUM, "RoomType", values=_codes(1, 2), label_zh="室内外"),
    F("supply_light_type", K.ENUM, "SupplyLightType", values=_codes(1, 2, 3, 4, 9), label_zh="补光属性"),
    F("direction_type", K.ENUM, "DirectionType", values=_range(1, 8), label_zh="监视方位"),
    F("position_type", K.ENUM, "PositionType", values=_range(1, 10), label_zh="位置类型"),
    F("use_type", K.ENUM, "UseType", values=_range(1, 3), label_zh="用途属性"),
    F("resolution", K.ENUM, "Resolution", values=_range(1, 6), multi=True, label_zh="分辨率"),
    # --- added by the 2022 edition ---
    F("point_type", K.ENUM, "PointType", values=_codes(1, 2, 3, 9), label_zh="点位类型"),
    F("point_common_name", K.TEXT, "PointCommonName", label_zh="点位俗称"),
    F("mac", K.TEXT, "MAC", max_len=17, identity=True, label_zh="MAC地址"),
    F(
        "function_type",
        K.ENUM,
        "FunctionType",
        values=_codes("01", "02", "03", "04", "05", "99"),
        multi=True,
        label_zh="功能类型",
    ),
    F("horizontal_field_angle", K.FLOAT, "HorizontalFieldAngle", label_zh="水平视场角"),
    F("vertical_field_angle", K.FLOAT, "VerticalFieldAngle", label_zh="垂直视场角"),
    F("max_view_distance", K.FLOAT, "MaxViewDistance", label_zh="最大可视距离"),
    F("install_time", K.TEXT, "InstallTime", max_len=32, label_zh="安装时间"),
    F("management_unit", K.TEXT, "ManagementUnit", label_zh="管理单位"),
    F("contact_info", K.TEXT, "ContactInfo", label_zh="联系方式"),
    F("record_save_days", K.INT, "RecordSaveDays", label_zh="录像保存天数"),
    F(
        "photoelectric_imaging_type",
        K.ENUM,
        "PhotoelectricImagingType",
        values=_codes(1, 2, 3, 4, 5, 9),
        multi=True,
        label_zh="光电成像类型",
    ),
    # --- department bookkeeping ---
    F("local_id", K.TEXT, None, max_len=64, label_zh="点位编号"),
    # --- what ONVIF reports ---
    F("serial_number", K.TEXT, None, max_len=128, identity=True, label_zh="序列号"),
    F("firmware_version", K.TEXT, None, max_len=128, label_zh="固件版本"),
    F("hardware_id", K.TEXT, None, max_len=128, label_zh="硬件标识"),
    F("endpoint_ref", K.TEXT, None, max_len=255, identity=True, label_zh="ONVIF端点引用"),
    F("device_service_url", K.TEXT, None, max_len=512, label_zh="ONVIF设备服务地址"),
    F("services", K.JSON, None, label_zh="ONVIF服务地址"),
    F("media_profiles", K.JSON, None, label_zh="媒体配置"),
    F("stream_uri", K.TEXT, None, max_len=1024, label_zh="视频流地址"),
    F("snapshot_uri", K.TEXT, None, max_len=1024, label_zh="抓图地址"),
    F("auth_method", K.TEXT, None, max_len=16, label_zh="认证方式"),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
BY_XML: dict[str, Field] = {f.xml: f for f in FIELDS if f.xml}
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
CATALOG_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.xml)
ENUM_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.kind is Kind.ENUM)

# Identity keys in order of strength (the merge rule of the inventory).
IDENTITY_ORDER: tuple[str, ...] = ("device_id", "mac", "serial", "endpoint_ref", "host_port")
