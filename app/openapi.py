"""`/openapi.json` as the server really answers: integrators generate clients from it, and the
contract tests (schemathesis) hold the server to it.

FastAPI documents a 422 in its own shape and only the answers a route declares. crmwatch sends
its 422 as `{"detail", "errors"}` (app/errors.py), and some answers come from layers every route
shares: a NUL in the URL (400), the admin token (401), a path id no row has (404), a body over the
limit (413) or not sent as JSON (415). Those are added here, to every operation they can come from.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "what was wrong"},
        "code": {"type": "string", "description": "a machine-readable reason (the card's and widget's refusals)"},
    },
}
FIELD_ERROR = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}
VALIDATION = {
    "type": "object",
    "required": ["detail", "errors"],
    "properties": {
        "detail": {"type": "string", "description": "a summary: 'invalid request', or the one thing wrong"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
    },
}
WHY = {
    400: "Bad request: a NUL character in the URL, or a malformed body",
    401: "Not authenticated: the admin bearer token, a webhook's signature or a card's token is missing or wrong",
    404: "Not found: no such account, record or webhook key",
    409: "Conflict: the change does not apply to the record's current state",
    413: "The body is over the size limit",
    415: "The body must be sent as application/json",
    422: "Validation error: `errors` names each field that is wrong",
    502: "The CRM could not be reached (an OAuth code or token exchanged with it)",
    503: "The database does not answer",
}
_PATH_PARAM = re.compile(r"{[^}]+}")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _error(code: int) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/HTTPValidationError" if code == 422 else "#/components/schemas/Error"}
    return {"description": WHY.get(code, "Error"), "content": {"application/json": {"schema": schema}}}


def true_to_the_wire(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds what every operation may answer and fixes the shapes FastAPI assumes; idempotent."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR
    schemas["FieldError"] = FIELD_ERROR
    schemas["HTTPValidationError"] = VALIDATION
    schemas.pop("ValidationError", None)
    components.setdefault("securitySchemes", {})["adminToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "CRMWATCH_ADMIN_TOKEN",
    }
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            codes = {400}
            if path.startswith("/api/"):
                codes.add(401)
                op["security"] = [{"adminToken": []}]
            if _PATH_PARAM.search(path):
                codes |= {404, 422}
            if "requestBody" in op:
                codes |= {413, 422}
                if "application/json" in op["requestBody"].get("content", {}):
                    codes.add(415)
            if path == "/healthz":
                codes.add(503)
            responses = op.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(str(code), {})
            for code, answer in list(responses.items()):
                # Declared without a body (`responses={404: {}}`) or in FastAPI's 422 shape: the real one.
                if code.isdigit() and 400 <= int(code) < 500 and ("content" not in answer or code == "422"):
                    responses[code] = {**_error(int(code)), **{k: v for k, v in answer.items() if k != "content"}}
                    if not answer.get("description") or answer["description"] in _DEFAULT_DESCRIPTIONS:
                        responses[code]["description"] = WHY.get(int(code), "Error")
            for code in ("502", "503"):
                if code in responses and "content" not in responses[code]:
                    responses[code] = _error(int(code))
    return schema


_DEFAULT_DESCRIPTIONS = {
    "Bad Request",
    "Unauthorized",
    "Not Found",
    "Conflict",
    "Request Entity Too Large",
    "Content Too Large",
    "Unsupported Media Type",
    "Validation Error",
    "Additional Response",
}


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return true_to_the_wire(generate())

    app.openapi = openapi  # type: ignore[method-assign]
