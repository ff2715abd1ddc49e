"""The health sweep's ``frame`` stage: sample a camera's picture, judge its quality, keep the sample.

:class:`FrameStageRunner` implements :class:`probes.health.check.FrameStage` for one sweep shard (or one sample
run): it samples through one :class:`probes.frames.Sampler` (bounded concurrency, per-host sessions, the address
policy before every connection), diagnoses each picture (:func:`vms.frames.vqd.diagnose`) against the camera's
previous samples (freeze) and its reference frame (occlusion), writes the JPEG by content address and queues the
sample's row; :meth:`FrameStageRunner.flush` writes the queued rows in one transaction (the sweep calls it in its
batch flush, so that the results can carry the sample ids). The first fault-free sample of a camera without a
reference frame becomes its reference.

Source: ``prefer="rtsp"`` samples the stream URI (the snapshot URI only for a camera without one); ``"snapshot"``
the snapshot URI (the stream only for a camera without one). A sampler failure is the verdict with its cause
(``rtsp_*``, ``frame_timeout``, ``frame_decode``, ``snapshot_*``, ``address_refused``); a picture with faults is
``vqd_<first fault>``. With ``frames`` > 1 the verdict is the last picture's (the one judged against the most
history: a freeze shows there); every picture is kept.

Decoding, diagnosis and JPEG encoding run off the event loop, in threads (OpenCV and FFmpeg release the GIL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np

from probes.frames import Frame, Sampler, SampleTimeouts
from probes.health.check import CheckTarget
from probes.health.results import FrameVerdict
from probes.media import MediaFailure
from probes.policy import AddressPolicy
from vms.frames.store import SampleRow, SampleStore, pack
from vms.frames.vqd import Diagnosis, Thresholds, diagnose, reference_of, thresholds_from, thumbnail

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

__all__ = ["JPEG_QUALITY", "PREFER", "FrameStageRunner"]

JPEG_QUALITY: Final = 80
PREFER: Final = ("rtsp", "snapshot")


@dataclass(slots=True)
class _Judged:
    row: SampleRow
    diagnosis: Diagnosis
    ref: np.ndarray | None  # reference_of(picture) of a fault-free one of a camera without a reference frame


class FrameStageRunner:
    """One shard's frame stage (see the module's text). Use :meth:`preload` with the shard's cameras first (one
    query for their history and references), call it per camera, :meth:`flush` in the sweep's batch flush and
    :meth:`aclose` at the end."""

    def __init__(
        self,
        inv: Inventory,
        *,
        sample_set_id: int | None = None,
        sweep_id: int | None = None,
        frames: int = 1,
        spacing_s: float = 0.0,
        prefer: str = "rtsp",
        thresholds: Thresholds | None = None,
        sampler: Sampler | None = None,
        policy: AddressPolicy | None = None,
        concurrency: int = 64,
        per_host: int = 2,
        timeout: float = 10.0,
    ) -> None:
        if prefer not in PREFER:
            raise ValueError(f"unknown frame source {prefer!r}: choose rtsp or snapshot")
        if frames < 1:
            raise ValueError("frames must be at least 1")
        self.store = SampleStore(inv)
        self.sample_set_id = sample_set_id
        self.sweep_id = sweep_id
        self.frames = frames
        self.spacing_s = max(0.0, spacing_s)
        self.prefer = prefer
        self.thresholds = thresholds or thresholds_from(inv.settings)
        self.policy = policy or AddressPolicy()
        self.sampler = sampler or Sampler(
            concurrency=concurrency, per_host=per_host, timeouts=SampleTimeouts(total=timeout)
        )
        self._history: dict[int, list[np.ndarray]] = {}
        self._references: dict[int, np.ndarray] = {}
        self._loaded: set[int] = set()
        self._queued: list[_Judged] = []

    @property
    def history_size(self) -> int:
        """Thumbnails of earlier samples a diagnosis needs (the freeze check's run, less the new picture)."""
        return max(0, int(self.thresholds.freeze_samples) - 1)

    async def preload(self, camera_ids: Sequence[int]) -> None:
        """The history and reference frames of these cameras, in one query each (off the event loop)."""
        wanted = [cid for cid in camera_ids if cid not in self._loaded]
        if not wanted:
            return
        history, references = await asyncio.to_thread(self._load, wanted)
        for cid in wanted:
            self._history[cid] = list(history.get(cid, ()))
            ref = references.get(cid)
            if ref is not None:
                self._references[cid] = ref
        self._loaded.update(wanted)

    def _load(self, ids: list[int]) -> tuple[Mapping[int, list[np.ndarray]], Mapping[int, np.ndarray]]:
        n = self.history_size
        history = self.store.history(ids, n) if n else {}
        return history, self.store.references(ids)

    async def __call__(self, target: CheckTarget, stream_uri: str | None, timeout: float) -> FrameVerdict:
        cid = target.camera_id
        if cid not in self._loaded:
            await self.preload([cid])
        source, url = self._source(target, stream_uri)
        if url is None:
            return FrameVerdict(False, "not_supported", "no stream or snapshot URI known")
        user, password = (target.credentials[0].username, target.credentials[0].password) if target.credentials \
            else (None, None)
        got = await self._sample(source, url, user, password, target.host)
        if isinstance(got, MediaFailure):
            cause = str(getattr(got.cause, "value", got.cause))
            return FrameVerdict(False, cause, got.detail, {"frame_source": source})
        judged = await asyncio.to_thread(self._judge, cid, got)
        self._queued.extend(judged)
        last = judged[-1]
        row, diagnosis = last.row, last.diagnosis
        details: dict[str, Any] = {
            "frame_source": row.source,
            "codec": row.codec,
            "width": row.width,
            "height": row.height,
            "latency_ms": round(row.latency_ms, 1) if row.latency_ms is not None else None,
            "faults": list(diagnosis.faults),
            "samples": len(judged),
        }
        if not diagnosis.faults:
            return FrameVerdict(True, None, "", details)
        fault = diagnosis.faults[0]
        return FrameVerdict(False, f"vqd_{fault}", diagnosis.reasons.get(fault, fault), details)

    def _source(self, target: CheckTarget, stream_uri: str | None) -> tuple[str, str | None]:
        if self.prefer == "snapshot":
            return ("snapshot", target.snapshot_uri) if target.snapshot_uri else ("rtsp", stream_uri)
        return ("rtsp", stream_uri) if stream_uri else ("snapshot", target.snapshot_uri)

    async def _sample(self, source: str, url: str, user: str | None, password: str | None,
                      device_ip: str) -> list[Frame] | MediaFailure:
        if source == "rtsp":
            return await self.sampler.rtsp(url, username=user, password=password, policy=self.policy,
                                           device_ip=device_ip, frames=self.frames, spacing_s=self.spacing_s)
        got: list[Frame] = []
        for i in range(self.frames):
            if i and self.spacing_s:
                await asyncio.sleep(self.spacing_s)
            one = await self.sampler.snapshot(url, username=user, password=password, policy=self.policy,
                                              device_ip=device_ip)
            if isinstance(one, MediaFailure):
                if got:
                    break  # the pictures already taken are judged
                return one
            got.append(one)
        return got

    def _judge(self, cid: int, frames: Sequence[Frame]) -> list[_Judged]:
        """Diagnose, encode and store each picture (in a worker thread): oldest first, each judged against the ones
        before it (newest first) and the stored history."""
        out: list[_Judged] = []
        history = self._history.setdefault(cid, [])
        reference = self._references.get(cid)
        for frame in frames:
            diagnosis = diagnose(frame.image, history=history, reference=reference, thresholds=self.thresholds,
                                 luma=frame.luma, luma_full_range=frame.luma_full_range)
            thumb = diagnosis.thumb if diagnosis.thumb is not None else thumbnail(frame.image)
            ref = None
            if reference is None and not diagnosis.faults:
                ref = diagnosis.ref if diagnosis.ref is not None else reference_of(frame.image)
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError("JPEG encoding failed")
            data = jpeg.tobytes()
            sha = self.store.write_jpeg(data)
            row = SampleRow(
                camera_id=cid,
                taken_at=dt.datetime.now(dt.UTC),
                source=frame.source,
                width=frame.width,
                height=frame.height,
                codec=frame.codec,
                latency_ms=frame.latency_ms,
                bytes=len(data),
                sha256=sha,
                thumb=pack(thumb),
                faults=tuple(diagnosis.faults),
                metrics={k: round(float(v), 4) for k, v in diagnosis.metrics.items()},
                set_id=self.sample_set_id,
                sweep_id=self.sweep_id,
            )
            out.append(_Judged(row, diagnosis, ref))
            history.insert(0, thumb)
            del history[self.history_size:]
        return out

    def flush(self) -> dict[int, int]:
        """Write the queued sample rows (one transaction); camera id -> its last sample's id. A camera without a
        reference frame gets its first fault-free sample as one."""
        if not self._queued:
            return {}
        queued, self._queued = self._queued, []
        ids = self.store.add([j.row for j in queued])
        last: dict[int, int] = {}
        for judged, sample_id in zip(queued, ids, strict=True):
            cid = judged.row.camera_id
            last[cid] = sample_id
            if judged.ref is not None and cid not in self._references:
                self.store.set_reference(cid, sample_id, ref=judged.ref)
                self._references[cid] = judged.ref
        return last

    async def aclose(self) -> None:
        close = getattr(self.sampler, "aclose", None)
        if close is not None:
            await close()
