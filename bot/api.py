"""The JSON HTTP API over the allocation service, as one WSGI application.

Routes:

- `POST /resources/allocate` launches an allocation and responds once
  RunInstances has returned, without waiting for `running`, because API
  Gateway times out after 29 s. Clients follow the state with the GET route.
- `GET /resources/allocations/<allocation_id>` returns an allocation,
  updated from EC2 while it is pending.
- `GET /healthz` returns `{"status": "ok"}` without calling AWS.

Both resource routes require `Authorization: Bearer <API_TOKEN>`. Every
response body is JSON: `"status": "success"` with the allocation, or
`"status": "error"` with an `error` object that contains a code, a message,
a hint when there is one, and for invalid requests the bad fields.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from bot.errors import AllocationError, InvalidRequest, NotAllowed
from bot.models import (
    Allocation,
    AllocationRequest,
    AllocationState,
    Requester,
    has_control_characters,
)
from bot.runtime import Runtime

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ALLOCATION_ID_PATTERN = re.compile(r"^alloc-[0-9a-f]{16}$")
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}$")
# A deliberately loose check: one @, no spaces, a dot in the domain.
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 254

# Seconds a client should wait before retrying a 503 (AWS capacity or
# throttling). A judgement call, not a figure AWS publishes.
RETRY_AFTER_SECONDS = 30

# A duplicate request that arrives while the first one is still launching
# waits this long for the launch to finish, so that it can return the same
# instances (or the same error) as the first.
REPLAY_WAIT_SECONDS = 10.0
REPLAY_POLL_SECONDS = 0.2

# Field names of the service mapped to the names of this API's request body.
BODY_FIELD_NAMES = {"instance_type": "resource_type"}

JSON_CONTENT_TYPE = "application/json"

StartResponse = Callable[..., Any]


class ApiError(AllocationError):
    """An error of the HTTP layer itself: authentication, routing, body framing."""

    def __init__(
        self,
        http_status: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message, hint=hint, code=code)
        self.http_status = http_status
        self.headers = dict(headers or {})


# Request body


class UserInfo(BaseModel):
    """The person on whose behalf an API client requests an allocation."""

    model_config = ConfigDict(strict=True, extra="ignore")

    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
    ]
    email: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if has_control_characters(value) or "\n" in value or "\t" in value:
            raise ValueError("must not contain control characters or line breaks")
        return value

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        email = value.strip()
        too_long = len(email) > MAX_EMAIL_LENGTH
        if (
            too_long
            or has_control_characters(email)
            or not EMAIL_PATTERN.fullmatch(email)
        ):
            raise ValueError("is not an email address such as name@example.com")
        return email


class AllocateBody(BaseModel):
    """The body of `POST /resources/allocate`, as the predecessor accepted it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    resource_type: str
    quantity: int = 1
    user_info: UserInfo
    purpose: Annotated[str, StringConstraints(max_length=500)] | None = None

    @field_validator("purpose")
    @classmethod
    def _check_purpose(cls, value: str | None) -> str | None:
        if value is not None and has_control_characters(value):
            raise ValueError("must not contain control characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_user_info(cls, data: Any) -> Any:
        # A missing user_info becomes {} so that the error names the
        # required field inside it: "user_info.name".
        if isinstance(data, dict) and "user_info" not in data:
            return {**data, "user_info": {}}
        return data


def describe_problem(error: dict[str, Any]) -> str:
    """Return the problem of one pydantic error in the words of this API."""
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "int_type":
        return "must be a whole number such as 1"
    if kind == "string_type":
        return "must be a string"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {context.get('max_length')} characters"
    if kind == "value_error" and "error" in context:
        return str(context["error"])
    return str(error.get("msg", "is invalid"))


def fields_from_validation(error: ValidationError) -> dict[str, str]:
    """Map each bad field's dotted path to its problem, first problem per field."""
    fields: dict[str, str] = {}
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        fields.setdefault(path, describe_problem(item))
    return fields


def parse_json_object(data: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object, or raise InvalidRequest."""
    if not data.strip():
        raise InvalidRequest(
            {"body": "is empty"},
            hint="Send a JSON object with resource_type and user_info",
        )
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        problem = f"is not valid JSON: {error.msg} at line {error.lineno}"
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except RecursionError:
        problem = "is nested too deeply"
    except ValueError as error:
        # _reject_constant's message, or int() refusing a number of thousands
        # of digits, whose message talks about interpreter settings.
        text = str(error)
        problem = text if text.endswith("is not allowed") else "has a number too long"
    else:
        problem = None
    if problem is not None:
        raise InvalidRequest(
            {"body": problem},
            hint="Send a JSON object with resource_type and user_info",
        )
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        kind = {"list": "an array", "str": "a string"}.get(kind, kind)
        raise InvalidRequest(
            {"body": f"must be a JSON object, not {kind}"},
            hint="Send a JSON object with resource_type and user_info",
        )
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# Responses


def allocation_view(allocation: Allocation) -> dict[str, Any]:
    """Return the allocation as the API shows it, without the requester's email."""
    view: dict[str, Any] = {
        "allocation_id": allocation.allocation_id,
        "state": allocation.state.value,
        "instance_type": allocation.instance_type,
        "quantity": allocation.quantity,
        "region": allocation.region,
        "availability_zone": allocation.availability_zone,
        "purpose": allocation.purpose,
        "image_id": allocation.image_id,
        "architecture": allocation.architecture,
        "instances": [
            {
                "instance_id": instance.instance_id,
                "state": instance.state,
                "availability_zone": instance.availability_zone,
                "private_ip": instance.private_ip,
                "public_ip": instance.public_ip,
                "public_dns": instance.public_dns,
            }
            for instance in allocation.instances
        ],
        "created_at": allocation.created_at.isoformat(),
        "updated_at": allocation.updated_at.isoformat(),
    }
    if allocation.failure is not None:
        view["failure"] = allocation.failure.model_dump()
    return view


def error_body(error: AllocationError) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.hint:
        detail["hint"] = error.hint
    if isinstance(error, InvalidRequest):
        detail["fields"] = {
            BODY_FIELD_NAMES.get(name, name): problem
            for name, problem in error.fields.items()
        }
    body: dict[str, Any] = {"status": "error", "error": detail}
    if error.allocation_id:
        body["allocation_id"] = error.allocation_id
    return body


def json_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        headers=headers,
        content_type=JSON_CONTENT_TYPE,
    )


def replayed_error(allocation: Allocation) -> AllocationError:
    """Rebuild the error that the first request for a failed launch received."""
    failure = allocation.failure
    code = failure.code if failure else "allocation_failed"
    status = failure.http_status if failure and failure.http_status else 502
    retry = "To try again, send the request with a new Idempotency-Key."
    hint = f"{failure.hint}. {retry}" if failure and failure.hint else retry
    error = AllocationError(
        failure.message if failure else "The launch failed",
        hint=hint,
        code=code,
    )
    error.http_status = status
    error.allocation_id = allocation.allocation_id
    return error


@dataclass
class Outcome:
    """Facts about a response that the request log line reports."""

    allocation_id: str | None = None
    error_code: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


class ApiApp:
    """The WSGI application of the JSON API."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        replay_wait_seconds: float = REPLAY_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.runtime = runtime
        self.replay_wait_seconds = replay_wait_seconds
        self._sleep = sleep
        self._monotonic = monotonic
        # Routing never redirects: "/healthz/" is served like "/healthz", and
        # "//" in a path is not merged into "/".
        self._url_map = Map(
            [
                Rule("/resources/allocate", methods=["POST"], endpoint="allocate"),
                Rule(
                    "/resources/allocations/<allocation_id>",
                    methods=["GET"],
                    endpoint="allocation",
                ),
                Rule("/healthz", methods=["GET"], endpoint="health"),
            ],
            strict_slashes=False,
            merge_slashes=False,
        )

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        started = time.monotonic()
        request = Request(environ)
        outcome = Outcome()
        try:
            response = self._dispatch(request, outcome)
        except AllocationError as error:
            response = self._error_response(request, error, outcome)
        except Exception:
            logger.exception(
                "Unexpected error in %s %s", request.method, _loggable(request.path)
            )
            outcome.error_code = "internal_error"
            response = json_response(
                {
                    "status": "error",
                    "error": {
                        "code": "internal_error",
                        "message": "The server failed to process the request",
                        "hint": "Try again later; if it persists, tell the operator",
                    },
                },
                500,
            )
        self._log_request(request, response.status_code, outcome, started)
        return response(environ, start_response)

    # Routing and authentication

    def _dispatch(self, request: Request, outcome: Outcome) -> Response:
        adapter = self._url_map.bind_to_environ(request.environ)
        try:
            endpoint, arguments = adapter.match()
        except MethodNotAllowed as error:
            allowed = ", ".join(sorted(error.valid_methods or ()))
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {_loggable(request.path)}",
                hint=f"Use {allowed}",
                headers={"Allow": allowed},
            ) from None
        except HTTPException:
            # NotFound, or a redirect that the map's settings should prevent.
            raise _not_found(request.path) from None
        if endpoint == "health":
            return json_response({"status": "ok"}, 200)
        self._authenticate(request)
        if endpoint == "allocate":
            return self._allocate(request, outcome)
        return self._show(request, arguments["allocation_id"], outcome)

    def _authenticate(self, request: Request) -> None:
        token = self.runtime.settings.api_token
        if token is None or not token.get_secret_value():
            raise ApiError(
                401,
                "api_disabled",
                "The JSON API is disabled because API_TOKEN is not set",
                hint="The operator must set API_TOKEN to enable the API",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            raise ApiError(
                401,
                "unauthorized",
                "Missing or invalid API token",
                hint="Send the header 'Authorization: Bearer <API_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # Routes

    def _allocate(self, request: Request, outcome: Outcome) -> Response:
        key = self._idempotency_key(request)
        data = self._read_json_body(request)
        allocation_request = self._allocation_request(parse_json_object(data))
        service_key = None if key is None else "api:" + key
        allocation, created = self.runtime.service.allocate(
            allocation_request, service_key, follow=False
        )
        outcome.allocation_id = allocation.allocation_id
        if not created:
            outcome.extra_headers["Idempotent-Replayed"] = "true"
            allocation = self._wait_for_launch(allocation)
            if allocation.state is AllocationState.FAILED and not allocation.instances:
                raise replayed_error(allocation)
        return json_response(
            {"status": "success", **allocation_view(allocation)},
            200,
            {
                "Location": _location(request, allocation.allocation_id),
                **outcome.extra_headers,
            },
        )

    def _show(self, request: Request, allocation_id: str, outcome: Outcome) -> Response:
        if not ALLOCATION_ID_PATTERN.fullmatch(allocation_id):
            raise ApiError(
                404,
                "not_found",
                f"No allocation with ID {_loggable(allocation_id, 80)}",
                hint="An allocation ID is 'alloc-' followed by 16 hex digits",
            )
        outcome.allocation_id = allocation_id
        allocation = self.runtime.service.refresh(allocation_id)
        return json_response({"status": "success", **allocation_view(allocation)}, 200)

    # Request parts

    def _idempotency_key(self, request: Request) -> str | None:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        # Whitespace around a header value is not part of it (RFC 9110, 5.5).
        key = key.strip(" \t")
        if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
            raise InvalidRequest(
                {"Idempotency-Key": "must be 1 to 255 printable ASCII characters"}
            )
        return key

    def _read_json_body(self, request: Request) -> bytes:
        if request.mimetype != JSON_CONTENT_TYPE:
            sent = request.mimetype or "no content type"
            raise ApiError(
                415,
                "unsupported_media_type",
                f"The body must be JSON, but the request sent {sent}",
                hint="Send the header 'Content-Type: application/json'",
            )
        too_large = ApiError(
            413,
            "body_too_large",
            f"The body is larger than {MAX_BODY_BYTES // 1024} KiB",
            hint="Send only resource_type, quantity, user_info and purpose",
        )
        if request.content_length is not None and request.content_length > (
            MAX_BODY_BYTES
        ):
            raise too_large
        # Read one byte more than allowed to detect a chunked body that is too large.
        data = request.stream.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise too_large
        return data

    def _allocation_request(self, payload: dict[str, Any]) -> AllocationRequest:
        """Validate the body and the policy, reporting every bad field at once."""
        fields: dict[str, str] = {}
        body: AllocateBody | None = None
        try:
            body = AllocateBody.model_validate(payload)
        except ValidationError as error:
            fields.update(fields_from_validation(error))

        policy = self.runtime.service.policy
        instance_type: str | None = None
        not_allowed: NotAllowed | None = None
        resource_type = payload.get("resource_type")
        if "resource_type" not in fields and isinstance(resource_type, str):
            try:
                instance_type = policy.check_instance_type(
                    resource_type, field="resource_type"
                )
            except InvalidRequest as error:
                fields.update(error.fields)
            except NotAllowed as error:
                not_allowed = error
        quantity = payload.get("quantity", 1)
        if "quantity" not in fields and isinstance(quantity, int):
            try:
                policy.check_count(quantity, field="quantity")
            except InvalidRequest as error:
                fields.update(error.fields)

        if fields:
            raise InvalidRequest(fields)
        if not_allowed is not None:
            raise not_allowed
        assert body is not None and instance_type is not None
        return AllocationRequest(
            instance_type=instance_type,
            quantity=body.quantity,
            purpose=body.purpose,
            requester=Requester(
                source="api", name=body.user_info.name, email=body.user_info.email
            ),
        )

    def _wait_for_launch(self, allocation: Allocation) -> Allocation:
        """Wait while a concurrent first request is still launching the allocation."""
        deadline = self._monotonic() + self.replay_wait_seconds
        while (
            allocation.state is AllocationState.REQUESTED
            and self._monotonic() < deadline
        ):
            self._sleep(REPLAY_POLL_SECONDS)
            allocation = self.runtime.service.get(allocation.allocation_id)
        # NOTE: a record left in `requested` by a process that died before
        # launching is returned as it is, with state "requested".
        return allocation

    # Errors and logging

    def _error_response(
        self, request: Request, error: AllocationError, outcome: Outcome
    ) -> Response:
        outcome.error_code = error.code
        outcome.allocation_id = error.allocation_id or outcome.allocation_id
        headers: dict[str, str] = dict(outcome.extra_headers)
        if isinstance(error, ApiError):
            headers.update(error.headers)
        # A replayed failure is final for its Idempotency-Key, so it carries no
        # Retry-After, and its hint suggests a new key instead.
        if error.http_status == 503 and "Idempotent-Replayed" not in headers:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if error.allocation_id:
            headers["Location"] = _location(request, error.allocation_id)
        return json_response(error_body(error), error.http_status, headers)

    def _log_request(
        self, request: Request, status: int, outcome: Outcome, started: float
    ) -> None:
        level = logging.WARNING if status >= 500 else logging.INFO
        logger.log(
            level,
            "%s %s %d allocation=%s error=%s %.1f ms",
            request.method,
            _loggable(request.path),
            status,
            outcome.allocation_id or "-",
            outcome.error_code or "-",
            (time.monotonic() - started) * 1000,
        )


def _not_found(path: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"Nothing is at {_loggable(path)}",
        hint="Use POST /resources/allocate or GET /resources/allocations/<id>",
    )


def _location(request: Request, allocation_id: str) -> str:
    return f"{request.script_root}/resources/allocations/{allocation_id}"


def _loggable(text: str, limit: int = 200) -> str:
    """Shorten user-supplied text and mask control characters before logging it."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
