"""The ingest's OpenAPI document: the event contract's JSON Schema, Segment's Basic auth, the
webhooks' signatures in place of a key, and every error answer as problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from clm_domain.events import EVENT_ADAPTER
from clm_web.problem import document_problems


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`ingest_openapi` as the app's ``/openapi.json`` (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = ingest_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def ingest_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    event = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(event.pop("$defs", {}))
    schemas["Event"] = event
    components["securitySchemes"] = {
        "segmentBasic": {"type": "http", "scheme": "basic"},
    }
    for item in doc["paths"].values():  # webhooks: the provider's signature instead
        for operation in item.values():
            if "webhooks" in operation.get("tags", []):
                operation["security"] = []
    return document_problems(doc, bearer="writeKey")
