"""The FastAPI application object, its error rendering and OpenAPI document (no Ray here)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.models import NotificationRequest
from engine.problems import PROBLEM_CONTENT_TYPE, ApiProblem, from_pydantic


def problem_response(problem: ApiProblem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="Herald",
        version="0.1.0",
        description="Multi-tenant notification dispatch: email, SMS, push, WhatsApp, in-app.",
    )

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = from_pydantic(exc.errors(), prefix="request")
        return problem_response(ApiProblem(422, "the request is not valid", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(ApiProblem(exc.status_code, str(exc.detail)), request)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    model = NotificationRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(model.pop("$defs", {}))
    components["NotificationRequest"] = model
    for path in ("/api/notifications", "/api/route/explain"):
        post = schema.get("paths", {}).get(path, {}).get("post")
        if post is not None:
            post["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotificationRequest"}}},
            }
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    app.openapi_schema = schema
    return schema
