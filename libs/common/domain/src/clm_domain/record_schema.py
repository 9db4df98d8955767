"""The JSON Schemas of the lifecycle records, generated from :mod:`clm_domain.record_types`
(committed in ``deploy/schemas/``; ``python -m clm_domain.lifecycle_records --schema`` writes
them)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from clm_domain.record_types import SCHEMA_V1, SCHEMAS, LifecycleRecordV1, LifecycleRecordV2


def record_adapter(schema: str) -> TypeAdapter[Any]:
    """A pydantic validator of one record version (the schema's source; tests use it too)."""
    if schema == SCHEMA_V1:
        return TypeAdapter(Annotated[LifecycleRecordV1, Field(discriminator="kind")])
    return TypeAdapter(Annotated[LifecycleRecordV2, Field(discriminator="kind")])


def json_schema(schema: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record version, from the types: the version's
    kinds, its ``schema`` value as a constant and (v1) without the v2-only ``restated``."""
    doc = record_adapter(schema).json_schema()
    for definition in doc["$defs"].values():
        properties = definition.get("properties", {})
        if "schema" in properties and "kind" in properties:
            properties["schema"] = {"const": schema, "type": "string"}
            if schema == SCHEMA_V1:
                properties.pop("restated", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": schema,
        "description": (
            f"A record of the CLM Stream lifecycle stream whose `schema` is {schema} "
            "(generated from clm_domain.lifecycle_records; see docs/lifecycle-records.md)."
        ),
        **doc,
    }


def schema_files() -> dict[str, str]:
    """File name → text of every version's JSON Schema, as committed in ``deploy/schemas``."""
    return {
        f"{schema}.schema.json": json.dumps(json_schema(schema), indent=2) + "\n"
        for schema in SCHEMAS
    }
