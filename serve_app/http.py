"""The FastAPI application object, its error rendering and OpenAPI document (no Ray here)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.models import FieldError
from engine.problems import PROBLEM_CONTENT_TYPE, ApiProblem
from serve_app.docs import mount_docs
from serve_app.limits import RequestLimitMiddleware, RequestLimits
from serve_app.schemas.batches import batch_components
from serve_app.schemas.problems import problem_components
from serve_app.schemas.webhooks import SECURITY_SCHEMES, body_components


def problem_response(problem: ApiProblem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def _operation_id(route: APIRoute) -> str:
    """The route function's name: what generated clients call the operation."""
    return route.name


def create_app() -> FastAPI:
    app = FastAPI(
        title="Herald",
        version="0.1.0",
        description="Multi-tenant notification dispatch: email, SMS, push, WhatsApp, in-app.",
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_operation_id,
        # A JSON body without a Content-Type is read as JSON (curl -d, older clients); other types are 422.
        strict_content_type=False,
    )

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        unread = _body_of_another_type(request, exc.errors())
        return problem_response(unread or validation_problem(exc.errors()), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(ApiProblem(exc.status_code, str(exc.detail)), request)

    app.add_middleware(RequestLimitMiddleware, limits=RequestLimits.from_env())
    mount_docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _body_of_another_type(request: Request, errors: Any) -> ApiProblem | None:
    """415 when the body was not read as JSON for its Content-Type (FastAPI then finds "no object")."""
    declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not declared or declared.endswith(("/json", "+json")):
        return None
    if not any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return None
    msg = f"the body is read as JSON only: send it as Content-Type: application/json (not {declared})"
    return ApiProblem(415, msg, errors=[FieldError(("header", "content-type"), msg)])


def validation_problem(errors: Any) -> ApiProblem:
    """FastAPI's request errors are already located (``body``/``query``/``path``/``header`` first)."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiProblem(400, "the body is not valid JSON")
    fields = [
        FieldError(tuple(e.get("loc", ())), str(e.get("msg", "invalid value")), str(e.get("type"))) for e in errors
    ]
    return ApiProblem(422, "the request is not valid", errors=fields)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    # The problem+json responses (serve_app.schemas.problems) and the provider webhooks' bodies and
    # signature schemes (serve_app.schemas.webhooks) refer to these shared components.
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update({**problem_components(), **body_components()})
    for name, component in batch_components().items():  # the batch body: a list of the routes' own models
        schemas.setdefault(name, component)
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    app.openapi_schema = schema
    return schema
