"""Benchmark: CPU per frame of the video-quality diagnosis (vms.frames.vqd.diagnose, every check: signal loss,
brightness, colour cast, contrast, blur, freeze against 9 thumbnails, occlusion against a reference, noise,
stripes) on the real pedestrian scene upscaled to 1080p, 720p, D1 and as it is (480x360).

Baseline, in the same run: the same checks done the plain way at full resolution (grey and Lab of the whole frame,
a CV_64F Laplacian's variance, the absolute difference against the previous full-size frame). Median CPU time of
batches of frames. Prints figures; never asserts on time. Goal (issue 9 brief): well under 5 ms per 1080p frame.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from tests import videos
from tests.bench.report import record, size
from vms.frames.vqd import diagnose, reference_of, thumbnail

BATCH = size("VMS_BENCH_VQD_BATCH", 20, 3)
ROUNDS = size("VMS_BENCH_VQD_ROUNDS", 9, 3)
SIZES = ((1920, 1080), (1280, 720), (704, 576), (480, 360))


def plain(image: np.ndarray, previous: np.ndarray) -> tuple[float, ...]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    mean, std = float(grey.mean()), float(grey.std())
    hist = np.bincount(grey.ravel(), minlength=256)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float32)
    cast = float(np.hypot(lab[..., 1].mean() - 128, lab[..., 2].mean() - 128))
    blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    freeze = float(cv2.absdiff(grey, cv2.cvtColor(previous, cv2.COLOR_BGR2GRAY)).mean())
    return mean, std, float(hist.max()), cast, blur, freeze


def cpu_ms(fn: Callable[[], object]) -> float:
    fn()
    runs = []
    for _ in range(ROUNDS):
        start = time.process_time()
        for _ in range(BATCH):
            fn()
        runs.append((time.process_time() - start) / BATCH * 1000)
    return statistics.median(runs)


def test_bench_vqd_cpu_per_frame() -> None:
    frames = videos.source_frames(40)
    for width, height in SIZES:
        scaled = [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames[28:40]]
        image, previous = scaled[-1], scaled[-2]
        history = [thumbnail(f) for f in reversed(scaled[:-1])][:9]
        reference = reference_of(scaled[0])
        ours = cpu_ms(lambda image=image, history=history, reference=reference: diagnose(
            image, history=history, reference=reference))
        base = cpu_ms(lambda image=image, previous=previous: plain(image, previous))
        goal = {"max_value": 5.0} if width == 1920 else {}
        row = record(f"VQD diagnose, CPU per {width}x{height} frame", ours, "ms", baseline=base,
                     baseline_name="plain checks at full resolution", group="frames", **goal)  # type: ignore[arg-type]
        print(f"{row.figure}: {ours:.2f} ms (plain full-resolution checks {base:.2f} ms, ratio {ours / base:.2f})")
