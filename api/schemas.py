"""Request and response bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class CameraEdit(BaseModel):
    fields: dict[str, Any] = Field(..., description="canonical field name -> new value", min_length=1)
