import pytest

from vms.inventory.quality import QualityContext, check_all, check_camera, name_problem

CTX = QualityContext(
    governed="371311",
    known_civil_codes={"371311", "371302", "3713", "37"},
    has_polygons=True,
    governed_has_polygon=True,
    known_parents={"37131100002000000001"},
)

GOOD = {
    "id": 1,
    "device_id": "37131100001326000123",
    "name": "罗庄区沂河路与双月湖路交叉口东",
    "civil_code": "371311",
    "longitude": 118.28,
    "latitude": 34.99,
    "region_by_position": "371311",
    "region_by_code": "371311",
    "region_code": "371311",
    "ptz_type": "1",
    "resolution": "5/6",
    "parent_id": "37131100002000000001",
}


def test_a_good_camera_passes():
    assert check_camera(GOOD, CTX) == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"device_id": None}, "ID-MISSING"),
        ({"device_id": "3713110000132600012"}, "ID-FORMAT"),
        ({"device_id": "37130200001326000123"}, "ID-OUTSIDE-REGION"),
        ({"device_id": "37131100001186000123"}, "ID-TYPE"),
        ({"device_id": "37131100991326000123"}, "ID-INDUSTRY"),
        ({"device_id": "37131100001329000123"}, "ID-NETWORK"),
        ({"civil_code": None}, "CIVIL-CODE-MISSING"),
        ({"civil_code": "379999"}, "CIVIL-CODE-INVALID"),
        ({"civil_code": "371302"}, "CIVIL-CODE-OUTSIDE"),
        ({"longitude": None}, "COORD-MISSING"),
        ({"longitude": 0.0}, "COORD-ZERO"),
        ({"latitude": 95.0}, "COORD-RANGE"),
        ({"region_by_position": None, "region_code": "371311"}, "COORD-OUTSIDE-REGIONS"),
        ({"region_by_position": "371302"}, "COORD-OUTSIDE-GOVERNED"),
        ({"region_by_position": "371302"}, "REGION-MISMATCH"),
        ({"ptz_type": "8"}, "ENUM-PTZTYPE"),
        ({"resolution": "5/7"}, "ENUM-RESOLUTION"),
        ({"status": "UNKNOWN"}, "ENUM-STATUS"),
        ({"name": "IPCamera 01"}, "NAME-DEFAULT"),
        ({"name": "12345"}, "NAME-NUMERIC"),
        ({"name": "192.168.1.64"}, "NAME-IP"),
        ({"name": ""}, "NAME-MISSING"),
        ({"parent_id": "37131100002000000099"}, "PARENT-UNRESOLVED"),
        ({"point_type": "1", "contact_info": "0539-1234567"}, "POINT-INFO-MISSING"),
    ],
)
def test_each_rule_fires(change, code):
    assert code in check_camera({**GOOD, **change}, CTX)


def test_class_one_point_with_its_info_passes():
    cam = {**GOOD, "point_type": "1", "install_time": "2023-05-06", "contact_info": "0539-1", "record_save_days": 90}
    assert check_camera(cam, CTX) == []


def test_duplicates_and_pass_rates():
    cams = [
        {**GOOD, "id": 1},
        {**GOOD, "id": 2, "device_id": "37131100001326000124"},  # same name and position as 1
        {**GOOD, "id": 3, "device_id": "37131100001326000125", "name": "罗庄区另一路口", "mac": "00:11:22:33:44:55"},
        {
            **GOOD,
            "id": 4,
            "device_id": "37131100001326000125",
            "name": "罗庄区第三路口",
            "mac": "00-11-22-33-44-55",
            "longitude": 118.3,
        },
        {**GOOD, "id": 5, "device_id": "37131100001326000126", "name": "罗庄区第四路口", "longitude": 118.31},
    ]
    report = check_all(cams, CTX, sources={1: ["a"], 2: ["a"], 5: ["a", "b"]}, target=0.95)
    assert report.problems[1] == ["DUP-NAME-POSITION"]
    assert report.problems[2] == ["DUP-NAME-POSITION"]
    assert set(report.problems[3]) == {"DUP-ID", "DUP-MAC"}
    assert 5 not in report.problems
    assert (report.overall.total, report.overall.passed) == (5, 1)
    assert not report.meets_target
    assert report.by_source["a"].total == 3 and report.by_source["a"].passed == 1
    assert report.by_source["b"].rate == 1.0
    assert report.by_rule["DUP-ID"] == 2


def test_names():
    assert name_problem("沂河路口") is None
    assert name_problem("Camera 01") == "NAME-DEFAULT"
    assert name_problem("通道1") == "NAME-DEFAULT"
    assert name_problem("DS-2CD2T47G2") == "NAME-DEFAULT"
    assert name_problem("10.1.2.3") == "NAME-IP"
