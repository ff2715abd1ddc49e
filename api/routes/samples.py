"""Frame samples: a sample's JPEG, and a camera's samples newest first (read scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from api.common import CameraRef, inventory_of
from api.deps import require_reader
from vms.errors import NotFound
from vms.frames.store import SampleStore
from vms.inventory.service import Inventory

router = APIRouter()
Inv = Annotated[Inventory, Depends(inventory_of)]
reader = [Depends(require_reader)]
MAX_SAMPLES = 200


@router.get(
    "/api/v1/samples/{sample_id}.jpg",
    dependencies=reader,
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the sampled frame (JPEG)"}},
)
def sample_jpeg(inv: Inv, sample_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)]) -> Response:
    """The JPEG of a frame sample (its file is named by its SHA-256, so it never changes: cached by clients)."""
    store = SampleStore(inv)
    row = store.get(sample_id)
    if row is None:
        raise NotFound(f"no frame sample {sample_id}")
    headers = {"ETag": f'"{row.sha256}"', "Cache-Control": "private, max-age=86400, immutable"}
    return Response(store.read_jpeg(row.sha256), media_type="image/jpeg", headers=headers)


@router.get("/api/v1/cameras/{ref}/samples", dependencies=reader)
def camera_samples(
    inv: Inv, ref: CameraRef, limit: Annotated[int, Query(ge=1, le=MAX_SAMPLES)] = 20
) -> dict[str, Any]:
    """A camera's frame samples, newest first: when, how, the video-quality faults found, and the JPEG's URL."""
    with inv.session(write=False) as s:
        camera_id = inv.resolve_camera(s, ref)
    items = []
    for r in SampleStore(inv).list(camera_id=camera_id, limit=limit):
        item = r.to_dict()
        item["url"] = f"/api/v1/samples/{r.id}.jpg"
        items.append(item)
    return {"camera_id": camera_id, "limit": limit, "items": items}
