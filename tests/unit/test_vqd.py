"""Video-quality diagnosis on synthetic pictures (vms.frames.vqd): every check, its masking, its thresholds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vms.errors import ConfigurationError
from vms.frames.vqd import FAULTS, Diagnosis, Thresholds, diagnose, reference_of, thresholds_from, thumbnail
from vms.settings import Settings


def scene(width: int = 480, height: int = 360, seed: int = 1) -> np.ndarray:
    """A textured colour picture with edges at every scale (noise octaves plus rectangles), mean ~120, std ~50."""
    rng = np.random.default_rng(seed)
    grey = np.zeros((height, width), np.float32)
    for cells in (4, 8, 16, 32):
        octave = rng.normal(0, 1, (max(2, cells * height // width), cells)).astype(np.float32)
        grey += cv2.resize(octave, (width, height), interpolation=cv2.INTER_CUBIC) * (64 / cells) ** 0.5
    for _ in range(300):
        x, y = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
        w, h = int(rng.integers(3, width // 6)), int(rng.integers(3, height // 6))
        grey[y : y + h, x : x + w] += float(rng.normal(0, 3))
    grey = (grey - grey.mean()) / grey.std() * 50 + 120
    tint = np.array([0.95, 1.0, 1.05], np.float32)  # a little colour, no cast
    chroma = cv2.resize(rng.normal(0, 12, (6, 8, 3)).astype(np.float32), (width, height))
    out = grey[..., None] * tint + chroma
    return np.clip(out, 0, 255).astype(np.uint8)


def faults(image: np.ndarray, **kwargs: object) -> tuple[str, ...]:
    return diagnose(image, **kwargs).faults  # type: ignore[arg-type]


def test_a_good_picture_passes_and_reports_its_metrics():
    d = diagnose(scene())
    assert isinstance(d, Diagnosis) and d.ok and d.faults == () and d.reasons == {}
    for name in ("mean", "std", "peak_share", "cast", "blur_var", "noise", "stripes"):
        assert name in d.metrics
    assert 100 < d.metrics["mean"] < 140 and d.metrics["std"] > 40
    assert "freeze_diff" not in d.metrics and "occlusion" not in d.metrics  # no history, no reference
    assert d.thumb is not None and np.array_equal(d.thumb, thumbnail(scene()))
    assert d.ref is not None and np.array_equal(d.ref, reference_of(scene()))  # the stage's first reference


@pytest.mark.parametrize(
    ("bgr", "colour"), [((255, 0, 0), "blue"), ((0, 0, 0), "black"), ((128, 128, 128), "grey"), ((0, 200, 0), "green")]
)
def test_a_uniform_screen_is_signal_loss_and_nothing_else(bgr, colour):
    d = diagnose(np.full((288, 352, 3), bgr, np.uint8), reference=reference_of(scene()))
    assert d.faults == ("signal_loss",)
    assert colour in d.reasons["signal_loss"]


def test_a_blue_screen_with_a_no_signal_caption_is_still_signal_loss():
    blue = np.full((360, 480, 3), (200, 40, 20), np.uint8)
    cv2.putText(blue, "NO SIGNAL", (170, 185), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    noisy = np.clip(blue.astype(np.int16) + np.random.default_rng(3).integers(-2, 3, blue.shape), 0, 255)
    d = diagnose(noisy.astype(np.uint8))
    assert d.faults == ("signal_loss",), d.metrics
    assert 0.98 < d.metrics["peak_share"] < 1.0


def test_dark_and_bright_pictures_and_what_they_mask():
    dark = cv2.convertScaleAbs(scene(), alpha=0.2)
    d = diagnose(dark, reference=reference_of(scene()))
    assert d.faults == ("too_dark",)  # its low contrast, low Laplacian and lost detail follow from the exposure
    assert d.reasons["too_dark"].startswith("mean grey") and "< 40" in d.reasons["too_dark"]
    assert d.metrics["blur_var"] < 100 and d.metrics["std"] < 25
    bright = cv2.convertScaleAbs(scene(), alpha=0.8, beta=130)
    assert faults(bright) == ("too_bright",)
    assert faults(dark, thresholds=Thresholds(dark_mean=20)) != ("too_dark",)


def test_a_colour_cast_is_flagged_and_a_neutral_picture_is_not():
    base = scene()
    red = np.clip(base.astype(np.float32) * (0.8, 0.75, 1.0) + (0, 0, 70), 0, 255).astype(np.uint8)
    d = diagnose(red)
    assert d.faults == ("colour_cast",) and d.metrics["cast"] > 1.5
    assert diagnose(base).metrics["cast"] < 1.0
    grey = cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert diagnose(grey).metrics["cast"] < 0.1


def test_low_contrast_is_flagged_and_masks_blur():
    flat = cv2.convertScaleAbs(scene(), alpha=0.3, beta=85)
    d = diagnose(flat)
    assert d.faults == ("low_contrast",) and d.metrics["std"] < 25


def test_blur_is_flagged_at_the_same_figure_whatever_the_resolution():
    sharp = scene(480, 360)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    assert faults(sharp) == () and faults(blurred) == ("blur",)
    # the same scenes at 1080p (and 720p, D1): the analysis width makes the Laplacian comparable
    for size in ((1920, 1080), (1280, 720), (704, 576)):
        big_sharp = cv2.resize(sharp, size, interpolation=cv2.INTER_CUBIC)
        big_blurred = cv2.resize(blurred, size, interpolation=cv2.INTER_CUBIC)
        assert faults(big_sharp) == (), (size, diagnose(big_sharp).metrics)
        assert faults(big_blurred) == ("blur",), size
    # a plain Laplacian at full resolution would call the upscaled 1080p picture blurred
    full = cv2.cvtColor(cv2.resize(sharp, (1920, 1080), interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2GRAY)
    assert cv2.Laplacian(full, cv2.CV_64F).var() < diagnose(sharp).metrics["blur_var"] / 3


def test_freeze_needs_the_same_picture_over_freeze_samples():
    picture = scene()
    rng = np.random.default_rng(5)
    history = []
    for _ in range(9):  # the same picture re-encoded: a grey level of jitter here and there
        jitter = rng.integers(-1, 2, picture.shape)
        history.append(thumbnail(np.clip(picture + jitter, 0, 255).astype(np.uint8)))
    d = diagnose(picture, history=history)
    assert d.faults == ("freeze",) and d.metrics["freeze_diff"] <= 1.0 and d.metrics["freeze_samples"] == 10
    assert "10 samples" in d.reasons["freeze"]
    # too few samples yet: measured, not judged
    short = diagnose(picture, history=history[:5])
    assert short.faults == () and short.metrics["freeze_samples"] == 6
    assert faults(picture, history=history[:2], thresholds=Thresholds(freeze_samples=3)) == ("freeze",)


def test_a_small_moving_object_or_a_changing_clock_proves_the_picture_is_live():
    picture = scene()
    history = [thumbnail(picture) for _ in range(9)]
    moved = picture.copy()
    cv2.rectangle(moved, (200, 150), (224, 200), (20, 20, 20), -1)  # a walking person, ~0.7 % of the frame
    d = diagnose(moved, history=history)
    assert d.metrics["freeze_diff"] <= 1.0 < d.metrics["freeze_pixel"] / 16  # tiny on average, large locally
    assert "freeze" not in d.faults
    changed = diagnose(cv2.convertScaleAbs(picture, alpha=1.0, beta=10), history=history)
    assert "freeze" not in changed.faults and changed.metrics["freeze_diff"] > 5


def test_occlusion_against_the_reference():
    picture = scene()
    ref = reference_of(picture)
    assert ref.shape == (90, 160) and ref.dtype == np.uint8
    assert faults(picture, reference=ref) == ()
    covered = picture.copy()
    covered[:230, :290] = 90  # a grey patch over ~39 % of the frame
    d = diagnose(covered, reference=ref)
    assert d.faults == ("occlusion",), d.metrics
    assert d.metrics["occlusion"] > 0.3 and "against the reference" in d.reasons["occlusion"]
    black = picture.copy()
    black[150:, 200:] = 0  # a black bag over the lower right
    assert "occlusion" in faults(black, reference=ref)
    small = picture.copy()
    small[:60, :80] = 90  # ~3 %: a sticker in a corner is not occlusion
    assert faults(small, reference=ref) == ()
    # another scene (the camera was moved) keeps its detail: not occlusion either
    assert faults(scene(seed=7), reference=ref) == ()
    # a reference made at another resolution is resized
    assert faults(covered, reference=reference_of(cv2.resize(picture, (1920, 1080)))) == ("occlusion",)


def test_noise_and_stripes_are_measured_and_only_judged_when_switched_on():
    picture = scene()
    rng = np.random.default_rng(9)
    snow = np.clip(picture.astype(np.float32) + rng.normal(0, 25, picture.shape[:2])[..., None], 0, 255)
    snow = snow.astype(np.uint8)
    bars = (25 * np.sin(2 * np.pi * np.arange(360) / 12.0))[:, None, None]
    striped = np.clip(picture.astype(np.float32) + bars, 0, 255).astype(np.uint8)
    assert faults(snow) == () and faults(striped) == ()  # off by default
    on = Thresholds(noise_sigma=8.0, stripes_ratio=15.0)
    assert faults(picture, thresholds=on) == ()
    assert faults(cv2.GaussianBlur(picture, (0, 0), 3), thresholds=on) == ("blur",)  # a blurred picture has no stripes
    assert faults(snow, thresholds=on) == ("noise",)
    assert faults(striped, thresholds=on) == ("stripes",)
    assert diagnose(snow).metrics["noise"] > 3 * diagnose(picture).metrics["noise"]


def test_faults_come_in_a_fixed_order():
    assert FAULTS[0] == "signal_loss" and len(FAULTS) == len(set(FAULTS)) == 10
    dark_frozen = cv2.convertScaleAbs(scene(), alpha=0.2)
    d = diagnose(dark_frozen, history=[thumbnail(dark_frozen)] * 9)
    assert d.faults == ("too_dark", "freeze") and list(d.reasons) == ["too_dark", "freeze"]


def test_grey_pictures_are_accepted():
    grey = cv2.cvtColor(scene(), cv2.COLOR_BGR2GRAY)
    d = diagnose(grey)
    assert d.faults == () and "cast" not in d.metrics
    assert thumbnail(grey).shape == (36, 64)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8), np.zeros((1, 10, 3), np.uint8), "image", None],
)
def test_bad_input_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="VQD needs a uint8"):
        diagnose(bad)


def test_thresholds_come_from_the_settings():
    assert thresholds_from(Settings()) == Thresholds()
    t = thresholds_from(Settings(vqd_dark_mean=60, vqd_freeze_samples=3, vqd_noise_sigma=8))
    assert (t.dark_mean, t.freeze_samples, t.noise_sigma, t.blur_var) == (60, 3, 8, 100)


def test_thresholds_from_the_environment(monkeypatch):
    monkeypatch.setenv("VMS_VQD_BLUR_VAR", "250")
    monkeypatch.setenv("VMS_VQD_STRIPES_RATIO", "15")
    t = thresholds_from(Settings())
    assert t.blur_var == 250 and t.stripes_ratio == 15


def test_inconsistent_thresholds_are_refused():
    with pytest.raises(ValueError, match="dark_mean"):
        Thresholds(dark_mean=200, bright_mean=100)
    with pytest.raises(ValueError, match="freeze_samples"):
        Thresholds(freeze_samples=1)
    with pytest.raises(ConfigurationError, match="VMS_VQD_"):
        thresholds_from(Settings(vqd_dark_mean=220, vqd_bright_mean=200))
