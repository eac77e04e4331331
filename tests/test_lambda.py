"""Tests of the Lambda handler with API Gateway proxy events of both payload formats."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bot import lambda_function
from bot.lambda_function import lambda_handler

TOKEN = "lambda-api-token"
BODY = {
    "resource_type": "t3.micro",
    "quantity": 2,
    "user_info": {"name": "Grace Hopper", "email": "grace@example.com"},
}


@pytest.fixture(autouse=True)
def cold_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test in a fresh execution environment, configured by variables."""
    monkeypatch.setattr(lambda_function, "_container", None)
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("ALLOCATIONS_TABLE", "lambda-allocations")
    for name in ("ALLOCATIONS_TABLE_CREATE", "AMI_ID", "LAUNCH_TEMPLATE", "SUBNET_IDS"):
        monkeypatch.delenv(name, raising=False)


def rest_event(
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    stage: str = "prod",
    is_base64: bool = False,
) -> dict[str, Any]:
    """Return a REST API proxy event (payload format 1.0)."""
    headers = headers or {}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {name: [value] for name, value in headers.items()} or None,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "stage": stage,
            "path": f"/{stage}{path}",
            "httpMethod": method,
            "identity": {"sourceIp": "198.51.100.7"},
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def http_event(
    method: str,
    raw_path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    stage: str = "$default",
    is_base64: bool = False,
) -> dict[str, Any]:
    """Return an HTTP API proxy event (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": headers or {},
        "requestContext": {
            "stage": stage,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
            },
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def rest_headers() -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "X-Forwarded-Proto": "https",
    }


def http_headers() -> dict[str, str]:
    return {
        "content-type": "application/json",
        "authorization": f"Bearer {TOKEN}",
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
    }


def body_of(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(result["body"])


def instance_count(allocation_id: str) -> int:
    ec2 = lambda_function.get_container().runtime.service.provisioner.ec2
    response = ec2.describe_instances(
        Filters=[{"Name": "tag:AllocationId", "Values": [allocation_id]}]
    )
    return sum(len(r["Instances"]) for r in response["Reservations"])


def assert_proxy_result(result: dict[str, Any]) -> None:
    """Check the result shape that API Gateway requires.

    API Gateway returns its own 502 for any other shape.
    """
    assert isinstance(result["statusCode"], int)
    assert isinstance(result["body"], str)
    assert isinstance(json.loads(result["body"]), dict)
    assert all(isinstance(name, str) for name in result["headers"])
    assert all(isinstance(value, str) for value in result["headers"].values())
    assert result["isBase64Encoded"] is False


# Allocation through both payload formats


def test_lambda_rest_event_allocates(aws: None) -> None:
    event = rest_event("POST", "/resources/allocate", json.dumps(BODY), rest_headers())

    result = lambda_handler(event, None)
    body = body_of(result)

    assert result["statusCode"] == 200
    assert body["status"] == "success"
    assert body["instance_type"] == "t3.micro"
    assert instance_count(body["allocation_id"]) == 2


def test_lambda_rest_event_without_multi_value_headers(aws: None) -> None:
    event = rest_event("POST", "/resources/allocate", json.dumps(BODY), rest_headers())
    event["multiValueHeaders"] = None

    result = lambda_handler(event, None)

    assert result["statusCode"] == 200


def test_lambda_http_event_allocates(aws: None) -> None:
    event = http_event("POST", "/resources/allocate", json.dumps(BODY), http_headers())

    result = lambda_handler(event, None)
    body = body_of(result)

    assert result["statusCode"] == 200
    assert body["quantity"] == 2
    assert instance_count(body["allocation_id"]) == 2


def test_lambda_decodes_base64_body(aws: None) -> None:
    encoded = base64.b64encode(json.dumps(BODY).encode()).decode()
    event = http_event(
        "POST", "/resources/allocate", encoded, http_headers(), is_base64=True
    )

    result = lambda_handler(event, None)

    assert result["statusCode"] == 200
    assert body_of(result)["status"] == "success"


def test_lambda_invalid_base64_body_is_400(aws: None) -> None:
    event = http_event(
        "POST", "/resources/allocate", "%%%", http_headers(), is_base64=True
    )

    result = lambda_handler(event, None)

    assert result["statusCode"] == 400
    assert body_of(result)["error"]["code"] == "invalid_event"


def test_lambda_missing_content_type_is_415(aws: None) -> None:
    headers = rest_headers()
    del headers["Content-Type"]
    event = rest_event("POST", "/resources/allocate", json.dumps(BODY), headers)

    result = lambda_handler(event, None)
    error = body_of(result)["error"]

    assert result["statusCode"] == 415
    assert "application/json" in error["hint"]


def test_lambda_creates_table_on_cold_start(aws: None) -> None:
    event = http_event("POST", "/resources/allocate", json.dumps(BODY), http_headers())

    lambda_handler(event, None)
    dynamodb = lambda_function.get_container().runtime.service.ledger.dynamodb

    assert dynamodb.list_tables()["TableNames"] == ["lambda-allocations"]


def test_lambda_reuses_container(aws: None) -> None:
    event = http_event("GET", "/healthz")

    lambda_handler(event, None)
    first = lambda_function.get_container()
    lambda_handler(event, None)

    assert lambda_function.get_container() is first


def test_lambda_healthz_skips_table_check(aws: None) -> None:
    result = lambda_handler(rest_event("GET", "/healthz"), None)
    dynamodb = lambda_function.get_container().runtime.service.ledger.dynamodb

    assert result["statusCode"] == 200
    assert body_of(result) == {"status": "ok"}
    assert dynamodb.list_tables()["TableNames"] == []


def test_lambda_checks_token_before_dynamodb(aws: None) -> None:
    headers = {**http_headers(), "authorization": "Bearer wrong"}
    event = http_event("POST", "/resources/allocate", json.dumps(BODY), headers)

    result = lambda_handler(event, None)
    dynamodb = lambda_function.get_container().runtime.service.ledger.dynamodb

    assert result["statusCode"] == 401
    assert dynamodb.list_tables()["TableNames"] == []


# Paths and stages


def test_lambda_strips_stage_from_http_path(aws: None) -> None:
    event = http_event(
        "POST", "/prod/resources/allocate", json.dumps(BODY), http_headers(), "prod"
    )

    result = lambda_handler(event, None)
    allocation_id = body_of(result)["allocation_id"]

    assert result["statusCode"] == 200
    assert result["headers"]["Location"] == (
        f"/prod/resources/allocations/{allocation_id}"
    )


def test_lambda_keeps_path_for_default_stage(aws: None) -> None:
    event = http_event("GET", "/$default/healthz", stage="$default")

    result = lambda_handler(event, None)

    assert result["statusCode"] == 404


def test_lambda_get_allocation_http_event(aws: None) -> None:
    post = http_event("POST", "/resources/allocate", json.dumps(BODY), http_headers())
    allocation_id = body_of(lambda_handler(post, None))["allocation_id"]
    get = http_event(
        "GET", f"/resources/allocations/{allocation_id}", headers=http_headers()
    )

    result = lambda_handler(get, None)
    body = body_of(result)

    assert result["statusCode"] == 200
    assert body["allocation_id"] == allocation_id
    assert body["state"] == "running"


# Response shape on every path


@pytest.mark.parametrize(
    ("case", "expected_status"),
    [
        ("success", 200),
        ("invalid_body", 400),
        ("no_token", 401),
        ("unknown_path", 404),
        ("wrong_method", 405),
        ("no_content_type", 415),
        ("unexpected_error", 500),
        ("malformed_event", 400),
    ],
)
def test_lambda_result_is_json_text(
    aws: None, monkeypatch: pytest.MonkeyPatch, case: str, expected_status: int
) -> None:
    headers = rest_headers()
    event = rest_event("POST", "/resources/allocate", json.dumps(BODY), headers)
    if case == "invalid_body":
        event["body"] = "null"
    elif case == "no_token":
        del headers["Authorization"]
        event = rest_event("POST", "/resources/allocate", json.dumps(BODY), headers)
    elif case == "unknown_path":
        event = rest_event("GET", "/missing", headers=headers)
    elif case == "wrong_method":
        event = rest_event("DELETE", "/resources/allocate", headers=headers)
    elif case == "no_content_type":
        del headers["Content-Type"]
        event = rest_event("POST", "/resources/allocate", json.dumps(BODY), headers)
    elif case == "unexpected_error":
        service = lambda_function.get_container().runtime.service

        def explode(*_: Any, **__: Any) -> None:
            raise RuntimeError("internal detail")

        monkeypatch.setattr(service, "allocate", explode)
    elif case == "malformed_event":
        event = {"body": "{}"}

    result = lambda_handler(event, None)

    assert result["statusCode"] == expected_status
    assert_proxy_result(result)


def test_lambda_rejects_non_object_event(aws: None) -> None:
    result = lambda_handler(["not", "an", "event"], None)

    assert result["statusCode"] == 400
    assert_proxy_result(result)


def test_lambda_rest_event_with_null_headers(aws: None) -> None:
    event = rest_event("GET", "/healthz")
    event["headers"] = None
    event["multiValueHeaders"] = None

    result = lambda_handler(event, None)

    assert result["statusCode"] == 200


# Odd event shapes


def test_lambda_path_with_question_mark_is_404(aws: None) -> None:
    """HTTP APIs deliver the path decoded, so it may contain '?'."""
    result = lambda_function.lambda_handler(
        http_event("GET", "/resources/allocations/alloc-1?x", headers=http_headers()),
        None,
    )

    assert_proxy_result(result)
    assert result["statusCode"] == 404


def test_lambda_query_values_may_be_null(aws: None) -> None:
    event = rest_event("GET", "/healthz", headers=rest_headers())
    event["multiValueQueryStringParameters"] = {"a": None, "b": ["1", None]}
    event["queryStringParameters"] = {"a": None, "b": "1"}

    result = lambda_function.lambda_handler(event, None)

    assert_proxy_result(result)
    assert result["statusCode"] == 200


def test_lambda_base64_flag_as_string(aws: None) -> None:
    body = json.dumps(
        {"resource_type": "t3.micro", "user_info": {"name": "Ada Lovelace"}}
    )
    event = http_event("POST", "/resources/allocate", body, headers=http_headers())
    event["isBase64Encoded"] = "false"

    result = lambda_function.lambda_handler(event, None)

    assert_proxy_result(result)
    assert result["statusCode"] == 200


def test_lambda_header_with_line_break_is_400(aws: None) -> None:
    headers = {**rest_headers(), "X-Note": "a\r\nInjected: yes"}

    result = lambda_function.lambda_handler(
        rest_event("GET", "/healthz", headers=headers), None
    )

    assert_proxy_result(result)
    assert result["statusCode"] == 400
