"""Analyzers for structured-processing trials: each turns a frame into detections shaped like GA/T 1400 objects.

One small interface (:class:`Analyzer`): ``analyze(image, camera_id=...)`` -> :class:`Detection` list, with the
analyzer's ``name``, ``version`` and the ``kinds`` it can report. Built in, all from OpenCV (no weights fetched at
run time, nothing beyond the OpenCV wheel):

- ``hog_people``: the HOG + linear SVM people detector (Dalal-Triggs), 64x128 window. Small frames are upscaled so
  that a pedestrian of a 480x360 stream reaches the window; overlapping boxes are merged by non-maximum suppression.
- ``haar_face``, ``haar_fullbody``, ``haar_plate``: Viola-Jones cascades shipped with OpenCV (frontal face, full
  body, Russian licence plate: the only plate cascade there is; it finds the plate, it does not read it).
- ``motion``: background subtraction (MOG2) with a model per camera; the first frame of a camera only teaches it.
- ``onnx``: an operator-supplied detector model run by OpenCV DNN, with a declared input size, output layout and a
  class -> kind map (:class:`OnnxSpec`).

Analyzers are not thread-safe (OpenCV objects and per-camera state): one instance per trial run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

# GA/T 1400 object kinds (view library), plus Motion for the background-subtraction analyzer.
KINDS = ("Person", "Face", "MotorVehicle", "NonMotorVehicle", "Motion")
STRUCTURED = ("Person", "Face", "MotorVehicle", "NonMotorVehicle")  # Motion is no structured object


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in a frame. ``box`` = (LeftTopX, LeftTopY, RightBtmX, RightBtmY) in pixels of the frame
    given to the analyzer. ``plate_no`` is the plate number of a MotorVehicle where one was read."""

    kind: str
    box: tuple[int, int, int, int]
    score: float
    attributes: Mapping[str, Any] = field(default_factory=dict)
    plate_no: str | None = None


class Analyzer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...  # what makes its results differ: library, model, tuning
    @property
    def kinds(self) -> tuple[str, ...]: ...

    def analyze(self, image: np.ndarray, *, camera_id: int) -> list[Detection]: ...


def _clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[int, int, int, int]:
    return (
        max(0, min(width - 1, round(x1))),
        max(0, min(height - 1, round(y1))),
        max(0, min(width - 1, round(x2))),
        max(0, min(height - 1, round(y2))),
    )


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def nms(boxes: Sequence[tuple[float, float, float, float]], scores: Sequence[float], iou: float) -> list[int]:
    """Indices of the boxes (x1, y1, x2, y2) kept by non-maximum suppression, best score first."""
    if not boxes:
        return []
    # OpenCV's detectors hand their candidates over in thread order: a canonical order first, so that the same
    # frame keeps the same boxes (ties of score) in the same order on every run.
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), tuple(float(v) for v in boxes[i])))
    xywh = [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in (boxes[i] for i in order)]
    kept = cv2.dnn.NMSBoxes(xywh, [max(0.0, float(scores[i])) for i in order], 0.0, iou)
    return [order[int(i)] for i in np.asarray(kept).reshape(-1)]


@dataclass
class HogPeople:
    """OpenCV's default HOG people detector. ``min_height``: frames lower than this are upscaled to it (at most
    ``max_upscale`` times): the detector's window is 64x128, and a pedestrian 60-90 px tall in a 480x360 stream is
    found only at 2x (measured on the test clip: 4 of 10 frames at 1x, 10 of 10 at 2x). ``max_width``: larger
    frames are downscaled first (a 1080p frame costs 4x a 720p one, for people large enough anyway)."""

    min_height: int = 720
    max_upscale: float = 2.0
    max_width: int = 1280
    win_stride: int = 8
    pyramid_scale: float = 1.1  # 1.05 finds 5% more boxes (not more frames with people) for 1.7x the time
    min_score: float = 0.3  # SVM margin
    nms_iou: float = 0.45
    name: str = "hog_people"
    kinds: tuple[str, ...] = ("Person",)
    _hog: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]

    @property
    def version(self) -> str:
        return f"opencv-{cv2.__version__}/hog-default-people/h{self.min_height}-s{self.win_stride}-nms{self.nms_iou}"

    def scale_for(self, width: int, height: int) -> float:
        if width > self.max_width:
            return self.max_width / width
        if height < self.min_height:
            return min(self.max_upscale, self.min_height / height)
        return 1.0

    def analyze(self, image: np.ndarray, *, camera_id: int) -> list[Detection]:
        height, width = image.shape[:2]
        scale = self.scale_for(width, height)
        work = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(
            work, winStride=(self.win_stride, self.win_stride), padding=(8, 8), scale=self.pyramid_scale
        )
        boxes: list[tuple[float, float, float, float]] = []
        scores: list[float] = []
        for (x, y, w, h), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            if float(s) < self.min_score:
                continue
            boxes.append((x / scale, y / scale, (x + w) / scale, (y + h) / scale))
            scores.append(float(s))
        return [
            Detection("Person", _clip_box(*boxes[i], width, height), round(scores[i], 4))
            for i in nms(boxes, scores, self.nms_iou)
        ]


@dataclass
class HaarCascade:
    """A Viola-Jones cascade of OpenCV's data directory. The score is the last stage's weight (OpenCV's
    ``levelWeights``): higher is surer; ``min_score`` drops the weakest."""

    name: str
    cascade: str  # file name under cv2.data.haarcascades
    kind: str
    min_size: tuple[int, int]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    scale_factor: float = 1.1
    min_neighbors: int = 4
    min_score: float = 0.0
    max_width: int = 1280
    kinds: tuple[str, ...] = ()
    _classifier: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        path = Path(cv2.data.haarcascades) / self.cascade  # type: ignore[attr-defined]
        self._classifier = cv2.CascadeClassifier(str(path))
        if self._classifier.empty():
            raise ValueError(f"{self.name}: cannot load the cascade {path}")
        self.kinds = (self.kind,)

    @property
    def version(self) -> str:
        return f"opencv-{cv2.__version__}/{Path(self.cascade).stem}/n{self.min_neighbors}"

    def analyze(self, image: np.ndarray, *, camera_id: int) -> list[Detection]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_width / width)
        grey = _grey(image)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        rects, _levels, weights = self._classifier.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=self.min_size,
            outputRejectLevels=True,
        )
        out = []
        for (x, y, w, h), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            if float(s) < self.min_score:
                continue
            box = _clip_box(x / scale, y / scale, (x + w) / scale, (y + h) / scale, width, height)
            out.append(Detection(self.kind, box, round(float(s), 4), dict(self.attributes)))
        out.sort(key=lambda d: (d.box, -d.score))  # found in thread order: the same frame, the same order
        return out


def haar_face(**options: Any) -> HaarCascade:
    return HaarCascade("haar_face", "haarcascade_frontalface_default.xml", "Face", (24, 24), **options)


def haar_fullbody(**options: Any) -> HaarCascade:
    return HaarCascade("haar_fullbody", "haarcascade_fullbody.xml", "Person", (24, 48), min_neighbors=3, **options)


def haar_plate(**options: Any) -> HaarCascade:
    # The box is the plate's, not the vehicle's: said in the record's attributes.
    return HaarCascade(
        "haar_plate",
        "haarcascade_russian_plate_number.xml",
        "MotorVehicle",
        (40, 12),
        attributes={"BoxOf": "plate"},
        **options,
    )


@dataclass
class Motion:
    """Background subtraction (MOG2), one model per camera, on a copy at most ``work_width`` wide. A camera's
    first frame only trains its model (no detection); later frames report the moving regions larger than
    ``min_area`` (share of the frame) as ``Motion`` boxes, scored by the share of the box that is foreground.
    Meaningful on frames of one camera in time order (a sample set with several frames per camera). A model
    holds several floats per pixel and Gaussian (~6 MB at 320x240): only the ``max_cameras`` most recently seen
    cameras keep theirs (a trial reads the samples camera by camera)."""

    work_width: int = 320
    max_cameras: int = 8
    min_area: float = 0.002
    history: int = 50
    var_threshold: float = 16.0
    name: str = "motion"
    kinds: tuple[str, ...] = ("Motion",)
    _models: dict[int, Any] = field(default_factory=dict, repr=False)
    _shapes: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        return f"opencv-{cv2.__version__}/mog2-h{self.history}-v{self.var_threshold:g}"

    def analyze(self, image: np.ndarray, *, camera_id: int) -> list[Detection]:
        height, width = image.shape[:2]
        scale = min(1.0, self.work_width / width)
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1.0 else image
        model = self._models.get(camera_id)
        first = model is None or self._shapes.get(camera_id) != small.shape  # new camera, or its size changed
        if model is None or first:
            model = cv2.createBackgroundSubtractorMOG2(self.history, self.var_threshold, False)
            self._shapes[camera_id] = small.shape
        self._models.pop(camera_id, None)
        self._models[camera_id] = model  # most recently seen last
        while len(self._models) > max(1, self.max_cameras):
            oldest = next(iter(self._models))
            del self._models[oldest], self._shapes[oldest]
        mask = model.apply(small, learningRate=1.0 if first else -1)
        if first:
            return []
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_px = self.min_area * small.shape[0] * small.shape[1]
        out = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            if w * h < min_px:
                continue
            fill = float(np.count_nonzero(mask[y : y + h, x : x + w])) / float(w * h)
            box = _clip_box(x / scale, y / scale, (x + w) / scale, (y + h) / scale, width, height)
            out.append(Detection("Motion", box, round(fill, 4), {"AreaShare": round(w * h / mask.size, 4)}))
        return out


# COCO's 80 classes (the usual export of YOLO detectors) -> GA/T 1400 kinds: person; bicycle and motorcycle are
# two-wheelers (NonMotorVehicle in the view library's sense of 二轮车); car, bus, truck.
COCO_KINDS: dict[int, str] = {0: "Person", 1: "NonMotorVehicle", 2: "MotorVehicle", 3: "NonMotorVehicle",
                              5: "MotorVehicle", 7: "MotorVehicle"}  # fmt: skip
LAYOUTS = ("yolov5", "yolov8", "xyxy")


@dataclass(frozen=True, slots=True)
class OnnxSpec:
    """What the operator declares about a detector model file.

    ``layout``: ``yolov5``: rows [cx, cy, w, h, objectness, class scores...]; ``yolov8``: rows [cx, cy, w, h,
    class scores...] (the (1, 4+C, N) output is transposed when needed); ``xyxy``: rows [x1, y1, x2, y2, score,
    class] (a model exported with its own NMS). Coordinates are in pixels of the network input (``normalized``:
    0..1 of it). ``letterbox``: the frame is scaled keeping its aspect ratio and padded (YOLO's way), else
    stretched. ``classes``: class index -> kind; other classes are dropped."""

    model: Path
    input_size: tuple[int, int] = (640, 640)  # width, height
    layout: str = "yolov5"
    classes: Mapping[int, str] = field(default_factory=lambda: dict(COCO_KINDS))
    score: float = 0.25
    nms_iou: float = 0.45
    letterbox: bool = True
    normalized: bool = False
    swap_rb: bool = True  # the network wants RGB (frames are BGR)


class OnnxDetector:
    """An ONNX detector through OpenCV DNN (cv2.dnn.readNetFromONNX): no other runtime, CPU only."""

    kinds: tuple[str, ...]

    def __init__(self, spec: OnnxSpec) -> None:
        if spec.layout not in LAYOUTS:
            raise ValueError(f"onnx: layout {spec.layout!r} is not one of {', '.join(LAYOUTS)}")
        bad = sorted({k for k in spec.classes.values() if k not in STRUCTURED})
        if bad:
            raise ValueError(f"onnx: kind {bad[0]!r} is not one of {', '.join(STRUCTURED)}")
        path = Path(spec.model)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"onnx: cannot read the model {path}: {exc.strerror or exc}") from None
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error:
            raise ValueError(f"onnx: OpenCV DNN cannot load {path.name} as an ONNX model") from None
        self.spec = spec
        self.name = "onnx"
        self.version = f"{path.name}@{hashlib.sha256(data).hexdigest()[:12]}/{spec.layout}"
        self.kinds = tuple(k for k in STRUCTURED if k in set(spec.classes.values()))

    def _blob(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float, float]:
        """The input blob and how to map input pixels back: frame = (input - pad) / scale."""
        in_w, in_h = self.spec.input_size
        height, width = image.shape[:2]
        if self.spec.letterbox:
            s = min(in_w / width, in_h / height)
            new_w, new_h = round(width * s), round(height * s)
            pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
            canvas = np.full((in_h, in_w, 3), 114, np.uint8)
            canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = cv2.resize(image, (new_w, new_h))
            sx = sy = s
        else:
            canvas = np.ascontiguousarray(cv2.resize(image, (in_w, in_h)), dtype=np.uint8)
            sx, sy, pad_x, pad_y = in_w / width, in_h / height, 0, 0
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 255.0, (in_w, in_h), swapRB=self.spec.swap_rb, crop=False)
        return blob, sx, sy, float(pad_x), float(pad_y)

    def rows(self, output: np.ndarray) -> list[tuple[float, float, float, float, float, int]]:
        """The model's output as (x1, y1, x2, y2, score, class) in network-input pixels."""
        spec = self.spec
        out = np.asarray(output, dtype=np.float32)
        if out.ndim == 3:
            out = out[0]
        if out.ndim != 2:
            raise ValueError(f"onnx: output of shape {tuple(np.shape(output))} does not fit the {spec.layout} layout")
        if spec.layout == "yolov8" and out.shape[0] < out.shape[1]:
            out = out.T  # (4+C, N) -> (N, 4+C)
        need = {"yolov5": 6, "yolov8": 5, "xyxy": 6}[spec.layout]
        if out.shape[1] < need:
            raise ValueError(f"onnx: rows of {out.shape[1]} values, the {spec.layout} layout needs {need} or more")
        in_w, in_h = spec.input_size
        mul = np.array([in_w, in_h, in_w, in_h], np.float32) if spec.normalized else np.ones(4, np.float32)
        result: list[tuple[float, float, float, float, float, int]] = []
        if spec.layout == "xyxy":
            for r in out:
                x1, y1, x2, y2 = r[:4] * mul
                result.append((float(x1), float(y1), float(x2), float(y2), float(r[4]), round(float(r[5]))))
            return result
        first = 5 if spec.layout == "yolov5" else 4
        cls_scores = out[:, first:]
        cls = np.argmax(cls_scores, axis=1)
        score = cls_scores[np.arange(len(out)), cls]
        if spec.layout == "yolov5":
            score = score * out[:, 4]
        for r, c, s in zip(out, cls, score, strict=True):
            cx, cy, w, h = r[:4] * mul
            result.append(
                (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2), float(s), int(c))
            )
        return result

    def analyze(self, image: np.ndarray, *, camera_id: int) -> list[Detection]:
        height, width = image.shape[:2]
        blob, sx, sy, px, py = self._blob(image)
        self._net.setInput(blob)
        output = self._net.forward()
        boxes: list[tuple[float, float, float, float]] = []
        scores: list[float] = []
        kinds: list[str] = []
        classes: list[int] = []
        for x1, y1, x2, y2, s, c in self.rows(output):
            kind = self.spec.classes.get(c)
            if kind is None or s < self.spec.score or x2 <= x1 or y2 <= y1:
                continue
            boxes.append(((x1 - px) / sx, (y1 - py) / sy, (x2 - px) / sx, (y2 - py) / sy))
            scores.append(s)
            kinds.append(kind)
            classes.append(c)
        out = []
        for kind in dict.fromkeys(kinds):  # NMS per kind
            idx = [i for i, k in enumerate(kinds) if k == kind]
            for j in nms([boxes[i] for i in idx], [scores[i] for i in idx], self.spec.nms_iou):
                i = idx[j]
                box = _clip_box(*boxes[i], width, height)
                out.append(Detection(kind, box, round(scores[i], 4), {"Class": classes[i]}))
        return out


def parse_classes(text: str) -> dict[int, str]:
    """``coco`` or ``0:Person;2:MotorVehicle;...`` -> class index -> kind."""
    if text.strip().lower() == "coco":
        return dict(COCO_KINDS)
    out: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        index, sep, kind = part.partition(":")
        if not sep or not index.strip().isdigit():
            raise ValueError(f"onnx: classes entry {part!r} is not INDEX:KIND")
        out[int(index)] = kind.strip()
    if not out:
        raise ValueError("onnx: classes is empty")
    return out


def onnx_detector(
    *,
    model: str | Path,
    size: str | tuple[int, int] = (640, 640),
    layout: str = "yolov5",
    classes: str | Mapping[int, str] = "coco",
    score: float | str = 0.25,
    nms_iou: float | str = 0.45,
    letterbox: bool | str = True,
    normalized: bool | str = False,
    swap_rb: bool | str = True,
) -> OnnxDetector:
    """The ``onnx`` analyzer from options as given on the command line (strings) or in code."""
    if isinstance(size, str):
        w, sep, h = size.lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) <= 0 or int(h) <= 0:
            raise ValueError(f"onnx: size {size!r} is not WIDTHxHEIGHT")
        size = (int(w), int(h))
    spec = OnnxSpec(
        model=Path(model),
        input_size=size,
        layout=layout,
        classes=parse_classes(classes) if isinstance(classes, str) else dict(classes),
        score=_float("score", score),
        nms_iou=_float("nms_iou", nms_iou),
        letterbox=_flag("letterbox", letterbox),
        normalized=_flag("normalized", normalized),
        swap_rb=_flag("swap_rb", swap_rb),
    )
    return OnnxDetector(spec)


def _float(name: str, value: float | str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a number") from None


def _flag(name: str, value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: {value!r} is not true or false")


def _numeric_options(factory: Callable[..., Analyzer]) -> Callable[..., Analyzer]:
    """Options given as strings (the command line) converted to the type of the dataclass field's default."""

    def make(**options: Any) -> Analyzer:
        probe = factory()
        converted: dict[str, Any] = {}
        for key, value in options.items():
            if key.startswith("_") or not hasattr(probe, key) or key in ("name", "kinds", "version"):
                raise ValueError(f"{probe.name}: unknown option {key!r}")
            default = getattr(probe, key)
            if isinstance(value, str) and isinstance(default, bool):
                converted[key] = _flag(key, value)
            elif isinstance(value, str) and isinstance(default, int | float):
                number = _float(key, value)
                converted[key] = int(number) if isinstance(default, int) else number
            else:
                converted[key] = value
        return factory(**converted)

    return make


DEFAULT_ANALYZERS = ("hog_people", "haar_face", "haar_fullbody", "haar_plate", "motion")


def available_analyzers() -> dict[str, Callable[..., Analyzer]]:
    """Name -> factory(**options). ``onnx`` needs ``model=PATH``."""
    return {
        "hog_people": _numeric_options(HogPeople),
        "haar_face": _numeric_options(haar_face),
        "haar_fullbody": _numeric_options(haar_fullbody),
        "haar_plate": _numeric_options(haar_plate),
        "motion": _numeric_options(Motion),
        "onnx": onnx_detector,
    }


@dataclass(frozen=True, slots=True)
class AnalyzerSpec:
    """An analyzer by name with its options, as a trial records it (``name:key=value,key=value``)."""

    name: str
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> AnalyzerSpec:
        name, _, rest = text.strip().partition(":")
        options: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"analyzer {name}: option {part!r} is not KEY=VALUE")
            options[key.strip()] = value.strip()
        return cls(name.strip(), options)

    def build(self) -> Analyzer:
        factories = available_analyzers()
        factory = factories.get(self.name)
        if factory is None:
            raise ValueError(f"unknown analyzer {self.name!r}: one of {', '.join(factories)}")
        try:
            return factory(**self.options)
        except TypeError as exc:
            raise ValueError(f"{self.name}: bad options ({exc})") from None
