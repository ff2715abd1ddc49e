"""Request and response bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class CameraEdit(BaseModel):
    fields: dict[str, Any] = Field(..., description="canonical field name -> new value", min_length=1)


class CameraPage(BaseModel):
    """A page of cameras: the merged records (every field of the camera record, and ``extra``, ``conflicts``,
    ``region_code``, ``created_at``, ``updated_at``, ``removed_at``), never credentials."""

    total: int = Field(..., description="cameras matching the filters (when total_exact is false: more than this)")
    total_exact: bool = Field(
        ..., description="false when more than `total` match: a filtered list counts up to 1,000 matches"
    )
    limit: int
    offset: int
    next: str | None = Field(None, description="cursor of the next page (pass as `cursor`); null on the last page")
    items: list[dict[str, Any]]
