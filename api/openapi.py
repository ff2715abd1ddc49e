"""The OpenAPI schema says what the API really answers (tests/e2e/test_api_fuzz.py holds every response to it)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

# Every error is {"detail": "one line"} (api/app.py): a bad request too, not FastAPI's default list of errors.
ERROR = {
    "title": "Error",
    "type": "object",
    "properties": {"detail": {"title": "Detail", "type": "string"}},
    "required": ["detail"],
}


def document_errors(app: FastAPI) -> None:
    """Make the schema's 422 (``HTTPValidationError``) the one-line error the API sends."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default()  # caches it in app.openapi_schema: changed in place once
            found = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in found:
                found["HTTPValidationError"] = dict(ERROR)
                found.pop("ValidationError", None)  # only the default 422 referred to it
        return app.openapi_schema or default()

    app.openapi = openapi  # type: ignore[method-assign]
