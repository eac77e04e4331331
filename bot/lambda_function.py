"""AWS Lambda entry point: the JSON API behind API Gateway's proxy integration.

`lambda_handler` accepts both event formats of API Gateway, REST APIs
(payload format 1.0) and HTTP APIs (payload format 2.0). It turns the event
into a WSGI environ, runs ApiApp, and returns the proxy result, whose body is
always a string and whose header values are always strings, because API
Gateway returns 502 for any other shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from typing import Any
from urllib.parse import quote, urlencode

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from bot.api import RETRY_AFTER_SECONDS, ApiApp
from bot.config import Settings
from bot.log import configure_logging
from bot.runtime import Runtime

logger = logging.getLogger(__name__)


class Container:
    """The objects one Lambda execution environment keeps between invocations.

    The ledger creates its table on first use, after the request passed
    authentication, so a cold start needs no check of its own.
    """

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.app = ApiApp(runtime)


_container: Container | None = None
_container_lock = threading.Lock()


def get_container() -> Container:
    """Return this execution environment's Container, building it on first use."""
    global _container
    if _container is None:
        with _container_lock:
            if _container is None:
                settings = Settings()
                configure_logging(settings.log_level)
                # The Lambda runtime installs its own root handler, so
                # configure_logging's basicConfig leaves the level unset.
                logging.getLogger().setLevel(settings.log_level.upper())
                _container = Container(Runtime(settings))
                logger.info("Lambda container started in %s", settings.aws_region)
    return _container


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Serve one API Gateway proxy event with the JSON API."""
    try:
        request = parse_event(event)
    except InvalidEvent as error:
        logger.warning("Rejected a malformed API Gateway event: %s", error)
        return error_result(400, "invalid_event", str(error))

    try:
        container = get_container()
    except Exception:
        logger.exception("API start-up failed. Check the environment variables")
        return error_result(
            500,
            "internal_error",
            "The server failed to start",
            hint="Tell the operator; the function's log names the cause",
        )

    try:
        environ = request.environ()
    except ValueError as error:  # a header value with a line break, for example
        logger.warning("Event could not become a WSGI request: %s", error)
        return error_result(400, "invalid_event", "The request could not be read")
    response = Response.from_app(container.app, environ)
    return proxy_result(response)


# Events


class InvalidEvent(ValueError):
    """The event is not an API Gateway proxy event this handler can serve."""


class ProxyRequest:
    """The HTTP request carried by one API Gateway proxy event."""

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: list[tuple[str, str]],
        body: bytes,
        script_root: str,
        source_ip: str | None,
    ):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.script_root = script_root
        self.source_ip = source_ip

    def environ(self) -> dict[str, Any]:
        scheme = "https"
        for name, value in self.headers:
            if name.lower() == "x-forwarded-proto" and value:
                scheme = value.split(",")[0].strip() or scheme
        builder = EnvironBuilder(
            method=self.method,
            path=self.path,
            base_url=f"{scheme}://localhost{self.script_root}",
            query_string=self.query_string,
            headers=self.headers,
            data=self.body,
            environ_base={"REMOTE_ADDR": self.source_ip or ""},
        )
        try:
            return builder.get_environ()
        finally:
            builder.close()


def parse_event(event: Any) -> ProxyRequest:
    """Read the request of a payload format 1.0 or 2.0 event, or raise InvalidEvent."""
    if not isinstance(event, dict):
        raise InvalidEvent("The event is not a JSON object")
    context = event.get("requestContext") or {}
    if not isinstance(context, dict):
        context = {}

    if event.get("version") == "2.0":
        http = context.get("http") or {}
        method = http.get("method") if isinstance(http, dict) else None
        path = event.get("rawPath") or "/"
        query_string = event.get("rawQueryString") or ""
        headers = _headers_v2(event)
        source_ip = http.get("sourceIp") if isinstance(http, dict) else None
    else:
        method = event.get("httpMethod")
        path = event.get("path") or "/"
        query_string = _query_string_v1(event)
        headers = _headers_v1(event)
        identity = context.get("identity") or {}
        source_ip = identity.get("sourceIp") if isinstance(identity, dict) else None

    if not isinstance(method, str) or not method:
        raise InvalidEvent(
            "The event has no HTTP method, so it is not an API Gateway proxy event"
        )
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidEvent("The event's path does not start with /")

    path, script_root = strip_stage(path, context.get("stage"))
    # The path arrives decoded. Unquoted, a "?" or "#" in it would be read as
    # the start of a query or fragment when the WSGI request is built.
    path = quote(path, safe="/:@!$&'()*+,;=-._~%")
    return ProxyRequest(
        method=method.upper(),
        path=path,
        query_string=query_string if isinstance(query_string, str) else "",
        headers=headers,
        body=_body(event),
        script_root=script_root,
        source_ip=source_ip if isinstance(source_ip, str) else None,
    )


def strip_stage(path: str, stage: Any) -> tuple[str, str]:
    """Split a leading `/<stage>` off the path and return (path, stage prefix).

    HTTP APIs put the stage in rawPath unless it is `$default`. REST APIs
    leave it out of `path`, so there is usually nothing to strip.
    NOTE: a path whose first segment equals the stage name loses that
    segment, because the event does not say whether the stage was included.
    """
    if not isinstance(stage, str) or not stage or stage == "$default":
        return path, ""
    prefix = "/" + stage
    if path == prefix:
        return "/", prefix
    if path.startswith(prefix + "/"):
        return path[len(prefix) :], prefix
    return path, ""


def _headers_v1(event: dict[str, Any]) -> list[tuple[str, str]]:
    # multiValueHeaders contains every value of a repeated header, but
    # headers keeps only the last one.
    multi = event.get("multiValueHeaders")
    if isinstance(multi, dict) and multi:
        return [
            (str(name), str(value))
            for name, values in multi.items()
            for value in (values or [])
            if value is not None
        ]
    single = event.get("headers")
    if isinstance(single, dict):
        return [
            (str(name), str(value))
            for name, value in single.items()
            if value is not None
        ]
    return []


def _headers_v2(event: dict[str, Any]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    single = event.get("headers")
    if isinstance(single, dict):
        headers.extend(
            (str(name), str(value))
            for name, value in single.items()
            if value is not None
        )
    # Payload format 2.0 moves the Cookie header into a separate list.
    cookies = event.get("cookies")
    if isinstance(cookies, list) and cookies:
        headers.append(("Cookie", "; ".join(str(cookie) for cookie in cookies)))
    return headers


def _query_string_v1(event: dict[str, Any]) -> str:
    multi = event.get("multiValueQueryStringParameters")
    if isinstance(multi, dict) and multi:
        pairs = [
            (name, value)
            for name, values in multi.items()
            for value in (values or [])
            if value is not None
        ]
        return urlencode(pairs)
    single = event.get("queryStringParameters")
    if isinstance(single, dict) and single:
        return urlencode([(k, v) for k, v in single.items() if v is not None])
    return ""


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise InvalidEvent("The event's body is not a string")
    if event.get("isBase64Encoded") in (True, "true", "True"):
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error:
            raise InvalidEvent(
                "The event's body is marked base64 but is not valid base64"
            ) from None
    return body.encode("utf-8")


# Results


def proxy_result(response: Response) -> dict[str, Any]:
    """Return the proxy integration result for a WSGI response."""
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        # Repeated headers are joined, since both payload formats accept a
        # comma-separated list and the JSON API sends no Set-Cookie.
        headers[name] = f"{headers[name]}, {value}" if name in headers else str(value)
    return {
        "statusCode": int(response.status_code),
        "headers": headers,
        "body": response.get_data().decode("utf-8", errors="replace"),
        "isBase64Encoded": False,
    }


def error_result(
    status: int, code: str, message: str, *, hint: str | None = None
) -> dict[str, Any]:
    """Return a JSON error result built without the WSGI application."""
    detail: dict[str, Any] = {"code": code, "message": message}
    if hint:
        detail["hint"] = hint
    headers = {"Content-Type": "application/json"}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return {
        "statusCode": status,
        "headers": headers,
        "body": json.dumps({"status": "error", "error": detail}),
        "isBase64Encoded": False,
    }
