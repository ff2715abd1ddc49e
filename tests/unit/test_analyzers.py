"""The analyzers behind the trial interface: OpenCV's HOG people detector (with the upscaling small frames need),
the Haar cascades, MOG2 motion per camera, and the pluggable ONNX detector, tested with tiny models built here."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vms.frames.analyzers import (
    COCO_KINDS,
    DEFAULT_ANALYZERS,
    AnalyzerSpec,
    HogPeople,
    Motion,
    available_analyzers,
    onnx_detector,
    parse_classes,
)


def _model(path: Path, rows: np.ndarray, *, score_from_image: np.ndarray | None = None, side: int = 64) -> Path:
    """A tiny ONNX detector: its output is ``rows`` (+ the input's mean times ``score_from_image``, so that a
    score can depend on the picture), input (1, 3, side, side)."""
    rows = rows.astype(np.float32)
    mask = np.zeros_like(rows) if score_from_image is None else score_from_image.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "mask"], ["from_image"]),
            helper.make_node("Add", ["rows", "from_image"], ["output"]),
        ],
        "tiny-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(rows.shape))],
        initializer=[numpy_helper.from_array(rows, "rows"), numpy_helper.from_array(mask, "mask")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_yolov5_rows_are_parsed_scored_mapped_and_suppressed(tmp_path):
    # rows [cx, cy, w, h, objectness, class0, class1] in pixels of the 64x64 input
    rows = np.array(
        [
            [32, 32, 16, 16, 0.9, 0.1, 0.8],  # class 1 -> MotorVehicle, score 0.72
            [33, 32, 16, 16, 0.8, 0.1, 0.7],  # the same object again: suppressed (NMS)
            [10, 10, 4, 4, 0.1, 0.9, 0.1],  # score 0.09 < 0.25: dropped
            [50, 50, 8, 8, 0.9, 0.9, 0.0],  # class 0 -> Person, 0.81; runs off the frame's bottom: clipped
        ]
    )[None]
    model = _model(tmp_path / "v5.onnx", rows)
    det = onnx_detector(model=model, size="64x64", classes="0:Person;1:MotorVehicle")
    assert det.kinds == ("Person", "MotorVehicle") and det.version.startswith("v5.onnx@")
    found = det.analyze(np.zeros((360, 640, 3), np.uint8), camera_id=1)
    # letterbox: 640x360 -> 64x36 at scale 0.1, 14 px of padding above and below
    assert [(d.kind, d.box, d.score) for d in found] == [
        ("MotorVehicle", (240, 100, 400, 260), 0.72),
        ("Person", (460, 320, 540, 359), 0.81),
    ]
    assert found[0].attributes == {"Class": 1}

    # unmapped classes are dropped; stretched instead of letterboxed
    only_people = onnx_detector(model=model, size="64x64", classes={0: "Person"}, letterbox=False)
    (person,) = only_people.analyze(np.zeros((360, 640, 3), np.uint8), camera_id=1)
    assert person.kind == "Person" and person.box == (460, 259, 540, 304)  # y: 46 and 54 x 360/64


def test_onnx_yolov8_transposed_output_follows_the_picture(tmp_path):
    # (1, 4 + 2 classes, 8 anchors): YOLOv8's layout; class-0 score of anchor 0 = the input's mean (0..1)
    rows = np.zeros((1, 6, 8), np.float32)
    rows[0, :4, 0] = [32, 32, 20, 40]
    rows[0, :4, 1] = [10, 10, 4, 4]
    rows[0, 5, 1] = 0.1  # too weak
    from_image = np.zeros_like(rows)
    from_image[0, 4, 0] = 1.0
    model = _model(tmp_path / "v8.onnx", rows, score_from_image=from_image)
    det = onnx_detector(model=model, size="64x64", layout="yolov8", classes="coco")
    white = np.full((64, 64, 3), 255, np.uint8)
    (found,) = det.analyze(white, camera_id=3)
    assert found.kind == "Person" and found.box == (22, 12, 42, 52) and found.score == pytest.approx(1.0, abs=1e-3)
    assert det.analyze(np.zeros((64, 64, 3), np.uint8), camera_id=3) == []  # black picture: score 0


def test_onnx_xyxy_normalised_rows(tmp_path):
    rows = np.array([[[0.25, 0.25, 0.75, 0.75, 0.9, 2], [0.1, 0.1, 0.2, 0.2, 0.9, 3]]])  # car, motorcycle
    model = _model(tmp_path / "xyxy.onnx", rows)
    det = onnx_detector(model=str(model), size="64x64", layout="xyxy", normalized="true", letterbox="false")
    found = det.analyze(np.zeros((100, 200, 3), np.uint8), camera_id=1)
    assert sorted((d.kind, d.box) for d in found) == [
        ("MotorVehicle", (50, 25, 150, 75)),
        ("NonMotorVehicle", (20, 10, 40, 20)),
    ]


def test_onnx_bad_declarations_are_one_line_errors(tmp_path):
    model = _model(tmp_path / "m.onnx", np.zeros((1, 2, 7)))
    with pytest.raises(ValueError, match="cannot read the model"):
        onnx_detector(model=tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"cannot load junk\.onnx"):
        onnx_detector(model=tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="layout 'ssd'"):
        onnx_detector(model=model, layout="ssd")
    with pytest.raises(ValueError, match="size '64' is not WIDTHxHEIGHT"):
        onnx_detector(model=model, size="64")
    with pytest.raises(ValueError, match="kind 'Cat'"):
        onnx_detector(model=model, classes="0:Cat")
    with pytest.raises(ValueError, match="not INDEX:KIND"):
        parse_classes("person")
    assert parse_classes("coco") == COCO_KINDS
    short = onnx_detector(model=_model(tmp_path / "short.onnx", np.zeros((1, 2, 3))), size="64x64")
    with pytest.raises(ValueError, match="rows of 3 values"):
        short.analyze(np.zeros((64, 64, 3), np.uint8), camera_id=1)


def test_hog_finds_pedestrians_only_once_small_frames_are_upscaled(test_data):
    with av.open(str(test_data / "video" / "pedestrians_480x360_8s.mp4")) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)][::20][:4]
    tuned = HogPeople()
    assert tuned.scale_for(480, 360) == 2.0 and tuned.scale_for(1920, 1080) == pytest.approx(1280 / 1920)
    hits = [tuned.analyze(f, camera_id=1) for f in frames]
    assert all(hits), [len(h) for h in hits]
    as_is = HogPeople(min_height=0)  # the 64x128 window at 1x misses people 60-90 px tall
    assert sum(map(len, hits)) > sum(len(as_is.analyze(f, camera_id=1)) for f in frames)
    for d in (d for h in hits for d in h):
        x1, y1, x2, y2 = d.box
        assert d.kind == "Person" and 0 <= x1 < x2 < 480 and 0 <= y1 < y2 < 360 and d.score >= tuned.min_score


def test_motion_is_per_camera_and_the_first_frame_only_trains():
    motion = Motion()
    background = np.full((240, 320, 3), 90, np.uint8)
    moved = background.copy()
    moved[100:160, 200:240] = 250  # a bright object arrives
    assert motion.analyze(background, camera_id=1) == []
    assert motion.analyze(moved, camera_id=2) == []  # camera 2's first frame: nothing to compare with
    (d,) = motion.analyze(moved, camera_id=1)
    x1, y1, x2, y2 = d.box
    assert d.kind == "Motion" and 195 <= x1 <= 200 and 95 <= y1 <= 100 and x2 >= 239 and y2 >= 159 and d.score > 0.5
    assert motion.analyze(moved, camera_id=2) == []  # the same picture again: no motion
    assert motion.analyze(np.full((120, 160, 3), 90, np.uint8), camera_id=1) == []  # new size: model restarts


def test_motion_keeps_models_of_the_recent_cameras_only():
    """A MOG2 model is ~6 MB at 320x240: 2,000 cameras' would be 12 GB. A trial reads camera by camera."""
    motion = Motion(max_cameras=2)
    background = np.full((240, 320, 3), 90, np.uint8)
    moved = background.copy()
    moved[100:160, 200:240] = 250
    for cid in range(10):
        motion.analyze(background, camera_id=cid)
    assert sorted(motion._models) == [8, 9]
    assert len(motion.analyze(moved, camera_id=9)) == 1  # a kept model still knows its background
    assert motion.analyze(moved, camera_id=0) == []  # an evicted camera starts over: its first frame trains


def test_haar_cascades_load_and_stay_quiet_on_an_empty_scene():
    flat = np.full((360, 480, 3), 128, np.uint8)
    for name in ("haar_face", "haar_fullbody", "haar_plate"):
        a = available_analyzers()[name]()
        assert a.analyze(flat, camera_id=1) == [] and a.version.startswith("opencv-") and len(a.kinds) == 1
    plate = available_analyzers()["haar_plate"]()
    assert plate.kinds == ("MotorVehicle",) and "russian_plate" in plate.version


def test_specs_parse_options_and_refuse_unknown_ones():
    spec = AnalyzerSpec.parse("hog_people:min_height=480,win_stride=4")
    assert spec.name == "hog_people" and spec.options == {"min_height": "480", "win_stride": "4"}
    hog = spec.build()
    assert isinstance(hog, HogPeople) and hog.min_height == 480 and hog.win_stride == 4
    assert AnalyzerSpec.parse("motion:min_area=0.01").build().min_area == 0.01  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown analyzer 'nope'"):
        AnalyzerSpec.parse("nope").build()
    with pytest.raises(ValueError, match="unknown option 'speed'"):
        AnalyzerSpec.parse("motion:speed=2").build()
    with pytest.raises(ValueError, match="not a number"):
        AnalyzerSpec.parse("motion:min_area=big").build()
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        AnalyzerSpec.parse("motion:fast")
    assert set(DEFAULT_ANALYZERS) <= set(available_analyzers())
