"""Video-quality diagnosis (DOMAIN.md section 5) of one sampled frame: pure numpy + OpenCV, no I/O.

`diagnose(image, history=..., reference=...)` measures a BGR uint8 frame and names its faults:

- signal_loss: one grey level (a +-4 level peak of the histogram) holds more than 98 % of the pixels, or the
  frame is uniform (grey std < 2): a blue, black or grey screen.
- too_dark / too_bright: mean grey level < 40 / > 210.
- colour_cast: the Lab chroma offset (distance of the mean a*, b* from neutral) relative to the chroma spread
  (std of a*, b*) is > 1.5.
- low_contrast: grey standard deviation < 25.
- blur: variance of the Laplacian < 100, measured at a fixed analysis width (480 px; smaller frames as they are),
  so the same scene gives the same figure at 480x360 and at 1080p.
- freeze: the frame's thumbnail against the thumbnails of the camera's previous samples: every one of the last
  `freeze_samples - 1` is within `freeze_diff` (mean absolute grey difference) and no thumbnail pixel moved by
  more than `freeze_pixel` (a clock overlay or one walking person proves the picture is live).
- occlusion: against the camera's reference (`reference_of` of a good frame): the largest connected region of
  blocks that lost their edges (edge energy below `occlusion_loss` of the reference's) or turned uniform covers
  at least `occlusion_share` of the frame.
- noise: the lower quartile of block noise estimates (Immerkaer's operator on the full-resolution centre) above
  `noise_sigma` grey levels. Off by default (0): H.264 at surveillance bitrates smooths noise away, so the
  figure depends on the encoder more than on the camera.
- stripes: the strongest periodic peak of the row and column profiles (FFT magnitude over the band's median)
  above `stripes_ratio`. Off by default (0): regular scene structure (windows, fences) also makes peaks.

Grey: OpenCV's grey of the BGR picture, or, when the caller has the decoder's luma plane of the same picture
(`diagnose(..., luma=...)`: probes.frames.Frame.luma), that plane (limited range 16-235 stretched to 0-255 after the
downscale, so the thresholds keep their meaning): the same weighting of gamma R'G'B' within about a grey level, and
no conversion of the whole picture.

A fault that explains others masks them: signal loss masks everything; too dark / too bright mask colour cast,
low contrast, blur and occlusion; low contrast masks blur and occlusion; blur masks occlusion. The metrics are
reported whenever they were measured, masked or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from vms.errors import ConfigurationError

if TYPE_CHECKING:
    from vms.settings import Settings

FAULTS = (
    "signal_loss",
    "too_dark",
    "too_bright",
    "colour_cast",
    "low_contrast",
    "blur",
    "freeze",
    "occlusion",
    "noise",
    "stripes",
)

WORK_WIDTH = 480  # every check but noise runs on a grey copy at most this wide (the blur figure's analysis width)
THUMB_SIZE = (64, 36)  # (width, height) of the per-sample thumbnail kept for freeze checks
REF_SIZE = (160, 90)  # (width, height) of the per-camera reference kept for occlusion checks
BLOCK = 10  # reference pixels per occlusion block side: a 16 x 9 grid
CAST_SIZE = 160  # width of the colour sample for the cast check
NOISE_CROP = 256  # side of the full-resolution centre crop the noise estimate reads
PEAK_HALF_WIDTH = 4  # a histogram "peak" is 2 * 4 + 1 grey levels wide (compression noise on a blue screen)

Image = npt.NDArray[Any]  # uint8 pictures (cv2 types its results loosely)

# limited-range (MPEG, 16-235) luma to full-range grey levels, as a YUV-to-RGB conversion scales it
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16.0) * 255.0 / 219.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Fault thresholds (grey levels 0-255). Defaults: DOMAIN.md section 5; settings VMS_VQD_<NAME> override."""

    signal_peak_share: float = 0.98  # share of pixels in one histogram peak above which the signal is lost
    signal_std: float = 2.0  # grey std below which the frame is uniform (signal lost)
    dark_mean: float = 40.0  # mean grey below: too dark
    bright_mean: float = 210.0  # mean grey above: too bright
    cast_ratio: float = 1.5  # Lab chroma offset / chroma spread above: colour cast
    contrast_std: float = 25.0  # grey std below: low contrast
    blur_var: float = 100.0  # Laplacian variance (at WORK_WIDTH) below: blurred
    freeze_diff: float = 1.0  # mean absolute thumbnail difference (0-255) at or below: the same picture
    freeze_pixel: float = 16.0  # ... and no thumbnail pixel changed by more than this
    freeze_samples: int = 10  # samples (this one included) that must all be the same picture
    occlusion_share: float = 0.2  # share of the frame the largest lost/uniform region must cover
    occlusion_loss: float = 0.3  # a block lost its detail below this share of its reference edge energy
    noise_sigma: float = 0.0  # noise estimate (grey levels) above: noisy; 0 = check off
    stripes_ratio: float = 0.0  # periodic peak over the band's median above: stripes; 0 = check off

    def __post_init__(self) -> None:
        for name in ("signal_peak_share", "occlusion_share", "occlusion_loss"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"VQD threshold {name}: {value} is not in (0, 1]")
        for name in ("dark_mean", "bright_mean"):
            value = getattr(self, name)
            if not 0.0 <= value <= 255.0:
                raise ValueError(f"VQD threshold {name}: {value} is not a grey level (0-255)")
        if self.dark_mean >= self.bright_mean:
            raise ValueError(f"VQD thresholds: dark_mean {self.dark_mean} must be below bright_mean {self.bright_mean}")
        for name in ("signal_std", "cast_ratio", "contrast_std", "blur_var", "freeze_diff", "freeze_pixel",
                     "noise_sigma", "stripes_ratio"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"VQD threshold {name}: {value} must be a finite number >= 0")
        if self.freeze_samples < 2:
            raise ValueError(f"VQD threshold freeze_samples: {self.freeze_samples} must be at least 2")


THRESHOLD_NAMES = tuple(f.name for f in fields(Thresholds))


def thresholds_from(settings: Settings) -> Thresholds:
    """The thresholds configured by VMS_VQD_<NAME> (vms.settings: `vqd_<name>`); unset ones keep the defaults."""
    values: dict[str, Any] = {}
    for name in THRESHOLD_NAMES:
        value = getattr(settings, f"vqd_{name}", None)
        if value is not None:
            values[name] = value
    try:
        return Thresholds(**values)
    except ValueError as exc:
        raise ConfigurationError(f"VMS_VQD_*: {exc}") from None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    faults: tuple[str, ...]  # in FAULTS order; empty = the frame passes
    metrics: dict[str, float]  # mean, std, peak_share, cast, blur_var, noise, stripes, freeze_diff, occlusion...
    reasons: dict[str, str]  # fault -> "mean grey 12.3 < 40"
    thumb: Image | None = field(default=None, compare=False, repr=False)  # = thumbnail(image), computed anyway
    ref: Image | None = field(default=None, compare=False, repr=False)  # = reference_of(image), computed anyway

    @property
    def ok(self) -> bool:
        return not self.faults


def _check_image(image: object) -> Image:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = f"{image.dtype} array" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"VQD needs a uint8 BGR (H, W, 3) or grey (H, W) image, got a {kind}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or min(image.shape[:2]) < 2:
        raise ValueError(f"VQD needs a uint8 BGR (H, W, 3) or grey (H, W) image at least 2x2, got shape {image.shape}")
    return image


def _check_luma(luma: object, image: Image) -> Image:
    if not isinstance(luma, np.ndarray) or luma.dtype != np.uint8 or luma.ndim != 2:
        raise ValueError("VQD luma: expected the picture's (H, W) uint8 luma plane")
    if luma.shape != image.shape[:2]:
        raise ValueError(f"VQD luma: shape {luma.shape} is not the picture's {image.shape[:2]}")
    if luma.strides[1] != 1:
        raise ValueError("VQD luma: the plane's pixels must be adjacent within a row")
    return luma


def _full_range(grey: Image, luma_full_range: bool) -> Image:
    if luma_full_range:
        return grey
    out: Image = cv2.LUT(grey, _LIMITED_TO_FULL)
    return out


def _grey(image: Image, luma: Image | None = None, luma_full_range: bool = False) -> Image:
    """A grey copy at most WORK_WIDTH wide: 2x2 means while it is twice too wide, then one bilinear step. From the
    luma plane when given (its range expanded after the downscale: on 1/16 of the pixels)."""
    if luma is not None:
        return _full_range(_grey(luma), luma_full_range)
    grey: Image = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    while w >= 2 * WORK_WIDTH:  # an exact halving by INTER_LINEAR is a 2x2 mean: INTER_AREA's result, 6x cheaper
        h, w = h // 2, w // 2
        grey = cv2.resize(grey[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_LINEAR)
    if w > WORK_WIDTH:  # less than 2x left: every source pixel still counts; INTER_AREA would cost 4x more
        size = (WORK_WIDTH, max(2, round(h * WORK_WIDTH / w)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    return grey


def _shrink(grey: Image, size: tuple[int, int]) -> Image:
    interpolation = cv2.INTER_AREA if grey.shape[1] >= size[0] and grey.shape[0] >= size[1] else cv2.INTER_LINEAR
    out: Image = cv2.resize(grey, size, interpolation=interpolation)
    return out


def thumbnail(image: np.ndarray) -> Image:
    """The small grey picture (64x36 uint8) kept per sample: the freeze check compares these."""
    return _shrink(reference_of(image), THUMB_SIZE)


def reference_of(image: np.ndarray) -> Image:
    """The camera's reference for occlusion: a 160x90 grey picture (uint8) of a good frame; the block edge and
    uniformity maps are derived from it at diagnosis time."""
    return _shrink(_grey(_check_image(image)), REF_SIZE)


def _peak_share(grey: Image) -> float:
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
    window = np.convolve(hist, np.ones(2 * PEAK_HALF_WIDTH + 1, np.float32), mode="same")
    return float(window.max() / grey.size)


def _screen_colour(image: Image) -> str:
    if image.ndim == 2:
        level = float(image.mean())
        return "black" if level < 40 else f"grey (level {level:.0f})"
    b, g, r = (float(v) for v in cv2.mean(image)[:3])
    top, low = max(b, g, r), min(b, g, r)
    if top < 40:
        return "black"
    if top - low < 30:
        return "white" if low > 210 else f"grey (level {(b + g + r) / 3:.0f})"
    name = "blue" if top == b else "green" if top == g else "red"
    return f"{name} (BGR {b:.0f},{g:.0f},{r:.0f})"


def _cast(image: Image) -> float:
    """Lab chroma offset over chroma spread (the equivalent-circle colour-cast factor, std as the spread)."""
    h, w = image.shape[:2]
    small = image if w <= CAST_SIZE else cv2.resize(
        image, (CAST_SIZE, max(1, round(h * CAST_SIZE / w))), interpolation=cv2.INTER_NEAREST
    )
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB)
    (_, a_mean, b_mean), (_, a_std, b_std) = (v.ravel() for v in cv2.meanStdDev(lab))
    offset = math.hypot(a_mean - 128.0, b_mean - 128.0)
    spread = math.hypot(a_std, b_std)
    return offset / max(spread, 1.0)


def _blur_var(grey: Image) -> float:
    lap = cv2.Laplacian(grey, cv2.CV_16S)
    _, std = cv2.meanStdDev(lap)
    return float(std[0, 0]) ** 2


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_NOISE_SCALE = math.sqrt(math.pi / 2.0) / 6.0


def _noise(image: Image, luma: Image | None = None, luma_full_range: bool = False) -> float:
    """Immerkaer's fast noise sigma per 16x16 block of the full-resolution centre, lower quartile (flat blocks)."""
    h, w = image.shape[:2]
    side_h, side_w = min(h, NOISE_CROP), min(w, NOISE_CROP)
    y, x = (h - side_h) // 2, (w - side_w) // 2
    if luma is not None:
        grey = _full_range(luma[y : y + side_h, x : x + side_w], luma_full_range)
    else:
        crop = image[y : y + side_h, x : x + side_w]
        grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if min(grey.shape) < 20:
        return 0.0
    response = np.abs(cv2.filter2D(grey, cv2.CV_32F, _NOISE_KERNEL)[1:-1, 1:-1])
    bh, bw = max(1, response.shape[0] // 16), max(1, response.shape[1] // 16)
    blocks = cv2.resize(response[: bh * 16, : bw * 16], (bw, bh), interpolation=cv2.INTER_AREA)
    return float(np.percentile(blocks, 25)) * _NOISE_SCALE


def _stripes(grey: Image) -> float:
    """Strongest periodic peak of the detrended row and column profiles, over the median of its neighbourhood
    in the spectrum (a smooth spectrum, blurred or not, gives about 1; a sinusoidal bar pattern hundreds)."""
    best = 0.0
    for axis in (0, 1):
        profile = grey.mean(axis=axis, dtype=np.float32)
        n = profile.size
        if n < 64:
            continue
        k = max(3, n // 16) | 1
        trend = np.convolve(np.pad(profile, k // 2, mode="edge"), np.ones(k, np.float32) / k, mode="valid")
        spectrum = np.abs(np.fft.rfft((profile - trend) * np.hanning(n)))[4:]
        # the neighbourhood: mean of the 16 bins around each bin, its 3 centre bins left out
        side = 8
        if spectrum.size < 4 * side:
            continue
        ring = np.ones(2 * side + 1, np.float64)
        ring[side - 1 : side + 2] = 0.0
        around = np.convolve(spectrum, ring / ring.sum(), mode="valid")
        centre = spectrum[side : side + around.size]
        floor = max(float(spectrum.mean()) * 0.05, 1e-6)
        best = max(best, float((centre / np.maximum(around, floor)).max()))
    return best


def _occlusion(cur: Image, reference: np.ndarray, t: Thresholds) -> tuple[float, float]:
    """(share of the frame in the largest lost/uniform region, share of all such blocks)."""
    if not isinstance(reference, np.ndarray) or reference.dtype != np.uint8 or reference.ndim != 2:
        raise ValueError("VQD reference: expected a grey uint8 array from reference_of()")
    ref: Image = reference if reference.shape[::-1] == REF_SIZE else _shrink(reference, REF_SIZE)
    grid = (REF_SIZE[0] // BLOCK, REF_SIZE[1] // BLOCK)

    def maps(img: Image) -> tuple[Image, Image]:
        f = img.astype(np.float32)
        edges = np.abs(cv2.Sobel(f, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(f, cv2.CV_32F, 0, 1))
        energy = cv2.resize(edges, grid, interpolation=cv2.INTER_AREA)
        mean = cv2.resize(f, grid, interpolation=cv2.INTER_AREA)
        sq = cv2.resize(f * f, grid, interpolation=cv2.INTER_AREA)
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        return energy, std

    ref_energy, ref_std = maps(ref)
    cur_energy, cur_std = maps(cur)
    lost = (ref_energy >= 8.0) & (cur_energy < t.occlusion_loss * ref_energy)
    uniform = (cur_std < 2.5) & (ref_std >= 5.0)
    mask = (lost | uniform).astype(np.uint8)
    total = mask.size
    if not mask.any():
        return 0.0, 0.0
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    largest = int(stats[1:count, cv2.CC_STAT_AREA].max())
    return largest / total, float(mask.sum()) / total


def _freeze(thumb: Image, history: Sequence[np.ndarray], t: Thresholds) -> tuple[float, float, int] | None:
    """(largest mean difference, largest pixel difference, samples compared) against the recent thumbnails."""
    recent = list(history[: t.freeze_samples - 1])
    if not recent:
        return None
    cur = thumb.astype(np.int16)
    worst_mean = worst_pixel = 0.0
    for old in recent:
        if not isinstance(old, np.ndarray) or old.ndim != 2:
            raise ValueError("VQD history: expected grey thumbnails from thumbnail()")
        prev = old if old.shape == thumb.shape else _shrink(old.astype(np.uint8), THUMB_SIZE)
        diff = np.abs(cur - prev.astype(np.int16))
        worst_mean = max(worst_mean, float(diff.mean()))
        worst_pixel = max(worst_pixel, float(diff.max()))
    return worst_mean, worst_pixel, len(recent)


def diagnose(
    image: np.ndarray,
    *,
    history: Sequence[np.ndarray] = (),
    reference: np.ndarray | None = None,
    thresholds: Thresholds | None = None,
    luma: np.ndarray | None = None,
    luma_full_range: bool = False,
) -> Diagnosis:
    """Measure one frame (BGR uint8) and name its faults. `history`: thumbnails of the camera's previous samples,
    newest first (freeze needs `freeze_samples - 1` of them); `reference`: the camera's `reference_of` frame;
    `luma`: the decoder's luma plane of the same picture ((H, W) uint8, rows may be strided; limited range unless
    `luma_full_range`), which the grey measurements then read instead of a conversion of `image`."""
    t = thresholds or Thresholds()
    image = _check_image(image)
    if luma is not None:
        luma = _check_luma(luma, image)
    grey = _grey(image, luma, luma_full_range)
    small = _shrink(grey, REF_SIZE)
    thumb = _shrink(small, THUMB_SIZE)
    faults: set[str] = set()
    reasons: dict[str, str] = {}
    mean_a, std_a = cv2.meanStdDev(grey)
    mean, std = float(mean_a[0, 0]), float(std_a[0, 0])
    peak = _peak_share(grey)
    metrics: dict[str, float] = {
        "width": float(image.shape[1]),
        "height": float(image.shape[0]),
        "mean": round(mean, 2),
        "std": round(std, 2),
        "peak_share": round(peak, 4),
    }

    if peak > t.signal_peak_share or std < t.signal_std:
        faults.add("signal_loss")
        why = f"{peak:.1%} of pixels in one grey level" if peak > t.signal_peak_share else f"grey std {std:.1f}"
        reasons["signal_loss"] = f"uniform {_screen_colour(image)} screen: {why}"
        return _result(faults, metrics, reasons, thumb, small)

    exposure = False
    if mean < t.dark_mean:
        faults.add("too_dark")
        reasons["too_dark"] = f"mean grey {mean:.1f} < {t.dark_mean:g}"
        exposure = True
    elif mean > t.bright_mean:
        faults.add("too_bright")
        reasons["too_bright"] = f"mean grey {mean:.1f} > {t.bright_mean:g}"
        exposure = True

    if image.ndim == 3:
        cast = _cast(image)
        metrics["cast"] = round(cast, 3)
        if not exposure and cast > t.cast_ratio:
            faults.add("colour_cast")
            reasons["colour_cast"] = f"chroma offset / spread {cast:.2f} > {t.cast_ratio:g}"

    blur = _blur_var(grey)
    metrics["blur_var"] = round(blur, 1)
    masked = exposure
    if not masked and std < t.contrast_std:
        faults.add("low_contrast")
        reasons["low_contrast"] = f"grey std {std:.1f} < {t.contrast_std:g}"
        masked = True
    if not masked and blur < t.blur_var:
        faults.add("blur")
        reasons["blur"] = f"Laplacian variance {blur:.1f} < {t.blur_var:g} (at {grey.shape[1]} px wide)"
        masked = True

    frozen = _freeze(thumb, history, t)
    if frozen is not None:
        diff, pixel, compared = frozen
        metrics["freeze_diff"] = round(diff, 3)
        metrics["freeze_pixel"] = round(pixel, 1)
        metrics["freeze_samples"] = float(compared + 1)
        if compared >= t.freeze_samples - 1 and diff <= t.freeze_diff and pixel <= t.freeze_pixel:
            faults.add("freeze")
            reasons["freeze"] = (
                f"the same picture in {compared + 1} samples: mean difference {diff:.2f} <= {t.freeze_diff:g}, "
                f"largest {pixel:.0f} <= {t.freeze_pixel:g}"
            )

    if reference is not None:
        region, lost = _occlusion(small, reference, t)
        metrics["occlusion"] = round(region, 3)
        metrics["occlusion_blocks"] = round(lost, 3)
        if not masked and region >= t.occlusion_share:
            faults.add("occlusion")
            reasons["occlusion"] = (
                f"{region:.0%} of the frame lost its detail against the reference (>= {t.occlusion_share:.0%})"
            )

    noise = _noise(image, luma, luma_full_range)
    metrics["noise"] = round(noise, 2)
    if t.noise_sigma > 0 and noise > t.noise_sigma:
        faults.add("noise")
        reasons["noise"] = f"noise sigma {noise:.1f} > {t.noise_sigma:g}"

    stripes = _stripes(grey)
    metrics["stripes"] = round(stripes, 1)
    if t.stripes_ratio > 0 and stripes > t.stripes_ratio:
        faults.add("stripes")
        reasons["stripes"] = f"periodic peak {stripes:.1f} x the spectrum median > {t.stripes_ratio:g}"

    return _result(faults, metrics, reasons, thumb, small)


def _result(
    faults: set[str], metrics: dict[str, float], reasons: dict[str, str], thumb: Image, ref: Image
) -> Diagnosis:
    ordered = tuple(f for f in FAULTS if f in faults)
    return Diagnosis(ordered, metrics, {f: reasons[f] for f in ordered}, thumb, ref)
