"""Every error is a JSON body that says what was wrong. A crash still answers JSON, and is
logged with its traceback, but the body never leaks internals."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.middleware import CLIENT_CLOSED

log = logging.getLogger(__name__)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _body_not_json(request, exc):
            # Otherwise pydantic says "Input should be a valid dictionary" about a body it never parsed.
            return JSONResponse(
                {"detail": "a JSON body is expected: send it with Content-Type: application/json"}, status_code=415
            )
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; every route of this path counts.
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request.app, request.url.path))}
        if exc.status_code == 422 and isinstance(exc.detail, str):
            # One shape for every 422: the summary, and the errors a client can show by field.
            return JSONResponse(
                {"detail": exc.detail, "errors": [{"loc": [], "msg": exc.detail, "type": "value_error"}]},
                status_code=422,
                headers=exc.headers,
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return client_gone()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        return crash_response(request.method)


def _body_not_json(request: Request, exc: RequestValidationError) -> bool:
    """The body failed validation because it was not sent as JSON (no or another Content-Type)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return False
    return any(
        tuple(e.get("loc", ()))[:1] == ("body",) and e.get("type") in ("dict_type", "model_attributes_type")
        for e in exc.errors()
    )


def crash_response(method: str) -> JSONResponse:
    """Logs the exception being handled, with its traceback, and answers 500 without internals."""
    log.exception("http.unhandled", extra={"method": method})
    return JSONResponse({"detail": "internal error; see the server log by request id"}, status_code=500)


def client_gone() -> Response:
    """The client hung up while sending its body: nothing was done, and nobody reads the answer.
    The access log records it (at INFO) as 499, the client's doing, not a server error."""
    return Response(status_code=CLIENT_CLOSED)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of the app answers at `path`."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)
