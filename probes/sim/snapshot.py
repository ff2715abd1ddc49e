"""Snapshot JPEGs of the simulated cameras: a few colour-bar test patterns encoded once with OpenCV, then shared."""

from __future__ import annotations

import functools

import numpy as np

SNAPSHOT_VARIANTS = 8
_BARS = (
    (192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0), (192, 0, 192), (0, 0, 192), (192, 0, 0), (0, 0, 0),
)  # BGR colour bars


SNAPSHOT_SIZE = (352, 288)  # CIF, a size every decoder accepts


@functools.lru_cache(maxsize=2 * SNAPSHOT_VARIANTS)
def _variant(variant: int, size: tuple[int, int] = SNAPSHOT_SIZE) -> bytes:
    import cv2  # imported on first snapshot: most fleet runs never serve one

    width, height = size
    img = np.zeros((height, width, 3), dtype=np.uint8)
    bar = width // len(_BARS)
    for i, colour in enumerate(_BARS):
        img[: height * 2 // 3, i * bar : (i + 1) * bar] = colour
    # gradient strip and a per-variant label so snapshots of different cameras differ
    img[height * 2 // 3 :, :, :] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    cv2.putText(img, f"SIM {variant}", (10, height - 20), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 255), 2)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("OpenCV could not encode the snapshot test pattern")
    return bytes(buf.tobytes())


def snapshot_jpeg(index: int, *, size: tuple[int, int] = SNAPSHOT_SIZE) -> bytes:
    """The JPEG a device returns from its snapshot URI (one of SNAPSHOT_VARIANTS, by device index)."""
    return _variant(index % SNAPSHOT_VARIANTS, size)
