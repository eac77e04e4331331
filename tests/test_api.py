"""Tests of the JSON API against moto, through werkzeug's test client and real HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from werkzeug.serving import make_server
from werkzeug.test import Client, TestResponse

from bot.allocations import AllocationService
from bot.api import ALLOCATION_ID_PATTERN, MAX_BODY_BYTES, ApiApp
from bot.config import Settings
from bot.runtime import Runtime

TOKEN = "test-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMAIL = "ada@example.com"
NAME = "Ada Lovelace"


def allocate_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resource_type": "t3.micro",
        "quantity": 1,
        "user_info": {"name": NAME, "email": EMAIL},
        "purpose": "load test",
    }
    body.update(overrides)
    return body


# Fixtures


@pytest.fixture
def runtime(settings: Settings, service: AllocationService) -> Runtime:
    return Runtime(settings, service=service)


@pytest.fixture
def app(runtime: Runtime) -> ApiApp:
    return ApiApp(runtime)


@pytest.fixture
def client(app: ApiApp) -> Client:
    return Client(app)


@pytest.fixture
def run_calls(service: AllocationService) -> list[dict[str, Any]]:
    """Record the serialized parameters of every RunInstances call."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params["body"])

    service.provisioner.ec2.meta.events.register("before-call.ec2.RunInstances", record)
    return calls


@pytest.fixture
def server(app: ApiApp) -> Iterator[int]:
    """Serve the app over HTTP on 127.0.0.1 and yield its port."""
    http_server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield http_server.server_port
    http_server.shutdown()
    thread.join(timeout=5)


def post(
    client: Client,
    body: Any,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> TestResponse:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    all_headers = {**AUTH, **(headers or {})}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return client.post("/resources/allocate", data=data, headers=all_headers)


def http_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send one request over a real socket and return status, headers and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {**AUTH, "Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        return response.status, dict(response.getheaders()), payload
    finally:
        connection.close()


def instances_of(service: AllocationService, allocation_id: str) -> list[dict]:
    response = service.provisioner.ec2.describe_instances(
        Filters=[{"Name": "tag:AllocationId", "Values": [allocation_id]}]
    )
    return [i for r in response["Reservations"] for i in r["Instances"]]


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def inject_error(
    service: AllocationService, code: str, message: str, status: int
) -> list[int]:
    """Make every RunInstances fail with an AWS error and return a call counter."""
    calls: list[int] = []

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        calls.append(1)
        http_response = AWSResponse(
            "https://ec2.us-east-1.amazonaws.com/", status, {}, None
        )
        parsed = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return http_response, parsed

    service.provisioner.ec2.meta.events.register("before-call.ec2.RunInstances", fail)
    return calls


# Successful allocation


def test_allocate_launches_instances_over_http(
    server: int, service: AllocationService, run_calls: list[dict[str, Any]]
) -> None:
    status, headers, body = http_request(
        server, "POST", "/resources/allocate", allocate_body(quantity=2)
    )

    assert status == 200
    allocation_id = body["allocation_id"]
    instances = instances_of(service, allocation_id)
    assert len(instances) == 2
    assert {i["InstanceType"] for i in instances} == {"t3.micro"}
    for instance in instances:
        tags = tags_of(instance)
        assert tags["AllocationId"] == allocation_id
        assert tags["RequestedBy"] == NAME
        assert tags["ManagedBy"] == service.settings.app_tag
    assert len(run_calls) == 1
    assert run_calls[0]["ClientToken"] == allocation_id
    assert run_calls[0]["MinCount"] == 2
    assert run_calls[0]["MaxCount"] == 2


def test_allocate_response_fields(client: Client) -> None:
    response = post(client, allocate_body(quantity=2))
    body = response.get_json()

    assert response.status_code == 200
    assert body["status"] == "success"
    assert ALLOCATION_ID_PATTERN.fullmatch(body["allocation_id"])
    assert body["state"] == "pending"
    assert body["instance_type"] == "t3.micro"
    assert body["quantity"] == 2
    assert body["region"] == "us-east-1"
    assert body["availability_zone"].startswith("us-east-1")
    assert body["purpose"] == "load test"
    assert len(body["instances"]) == 2
    assert set(body["instances"][0]) == {
        "instance_id",
        "state",
        "availability_zone",
        "private_ip",
        "public_ip",
        "public_dns",
    }
    assert body["instances"][0]["instance_id"].startswith("i-")
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["Location"] == (
        f"/resources/allocations/{body['allocation_id']}"
    )
    assert response.headers["Content-Type"] == "application/json"


def test_allocate_response_omits_email(client: Client) -> None:
    response = post(client, allocate_body())

    assert response.status_code == 200
    assert EMAIL not in response.get_data(as_text=True)


def test_allocate_default_quantity_is_one(
    client: Client, service: AllocationService
) -> None:
    body = allocate_body()
    del body["quantity"]

    response = post(client, body)

    assert response.status_code == 200
    assert response.get_json()["quantity"] == 1
    assert len(instances_of(service, response.get_json()["allocation_id"])) == 1


def test_allocate_arm_type_gets_arm64_ami(
    client: Client, service: AllocationService
) -> None:
    response = post(client, allocate_body(resource_type="t4g.micro"))
    body = response.get_json()

    assert response.status_code == 200
    instances = instances_of(service, body["allocation_id"])
    image_ids = {i["ImageId"] for i in instances}
    images = service.provisioner.ec2.describe_images(ImageIds=list(image_ids))
    assert {image["Architecture"] for image in images["Images"]} == {"arm64"}
    assert body["architecture"] == "arm64"


def test_allocate_accepts_mixed_case_type(client: Client) -> None:
    response = post(client, allocate_body(resource_type=" T3.Micro "))

    assert response.status_code == 200
    assert response.get_json()["instance_type"] == "t3.micro"


def test_allocate_accepts_json_charset(client: Client) -> None:
    response = post(
        client, allocate_body(), content_type="Application/JSON; charset=UTF-8"
    )

    assert response.status_code == 200


def test_allocate_accepts_missing_email_and_purpose(client: Client) -> None:
    response = post(client, {"resource_type": "t3.micro", "user_info": {"name": "Ada"}})

    assert response.status_code == 200
    assert response.get_json()["purpose"] is None


# Reading an allocation


def test_get_allocation_returns_state_over_http(server: int) -> None:
    _, _, created = http_request(server, "POST", "/resources/allocate", allocate_body())
    allocation_id = created["allocation_id"]

    status, _, body = http_request(
        server, "GET", f"/resources/allocations/{allocation_id}"
    )

    assert status == 200
    assert body["status"] == "success"
    assert body["allocation_id"] == allocation_id
    # moto reports instances as running at the first describe.
    assert body["state"] == "running"
    assert [i["state"] for i in body["instances"]] == ["running"]


def test_get_allocation_unknown_id_is_404(client: Client) -> None:
    response = client.get("/resources/allocations/alloc-0123456789abcdef", headers=AUTH)

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_get_allocation_malformed_id_is_404(client: Client) -> None:
    response = client.get("/resources/allocations/alloc-XYZ", headers=AUTH)

    assert response.status_code == 404
    assert response.get_json()["status"] == "error"


def test_get_allocation_requires_token(client: Client) -> None:
    response = client.get("/resources/allocations/alloc-0123456789abcdef")

    assert response.status_code == 401


# Health, routing


class NoAws:
    """A stand-in service that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the request used the service ({name})")


def test_healthz_needs_no_token_or_aws(settings: Settings) -> None:
    client = Client(ApiApp(Runtime(settings, service=NoAws())))  # type: ignore[arg-type]

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_unknown_path_is_json_404(client: Client) -> None:
    response = client.get("/nothing/here", headers=AUTH)

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_wrong_method_is_json_405(client: Client) -> None:
    response = client.get("/resources/allocate", headers=AUTH)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json()["error"]["code"] == "method_not_allowed"


# Authentication


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
)
def test_allocate_rejects_bad_token(
    client: Client, run_calls: list[dict[str, Any]], authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization

    response = client.post(
        "/resources/allocate", data=json.dumps(allocate_body()), headers=headers
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert run_calls == []


def test_allocate_accepts_lower_case_scheme(client: Client) -> None:
    response = post(
        client, allocate_body(), headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status_code == 200


def test_allocate_checks_token_before_body(client: Client) -> None:
    response = client.post("/resources/allocate", data="not json")

    assert response.status_code == 401


def test_api_disabled_without_token_setting(
    settings: Settings, service: AllocationService
) -> None:
    disabled = settings.model_copy(update={"api_token": None})
    client = Client(ApiApp(Runtime(disabled, service=service)))

    response = post(client, allocate_body())
    error = response.get_json()["error"]

    assert response.status_code == 401
    assert error["code"] == "api_disabled"
    assert "API_TOKEN" in error["message"] + error["hint"]


# Content type and body


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded"]
)
def test_allocate_rejects_non_json_content_type(
    client: Client, content_type: str | None
) -> None:
    response = post(client, allocate_body(), content_type=content_type)
    error = response.get_json()["error"]

    assert response.status_code == 415
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["hint"]


def test_allocate_rejects_body_over_64_kib(client: Client) -> None:
    body = allocate_body(purpose="x" * MAX_BODY_BYTES)

    response = post(client, body)

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("raw", "expected_fields"),
    [
        ("null", {"body"}),
        ("", {"body"}),
        ("not json", {"body"}),
        ("[]", {"body"}),
        ('"text"', {"body"}),
        ("{}", {"resource_type", "user_info.name"}),
        ('{"quantity": NaN}', {"body"}),
    ],
)
def test_allocate_rejects_bad_body(
    client: Client,
    run_calls: list[dict[str, Any]],
    raw: str,
    expected_fields: set[str],
) -> None:
    response = post(client, raw)
    error = response.get_json()["error"]

    assert response.status_code == 400
    assert error["code"] == "invalid_request"
    assert set(error["fields"]) == expected_fields
    assert run_calls == []


@pytest.mark.parametrize("quantity", [0, -1, "1", 1.5, 1.0, True, None, 99999])
def test_allocate_rejects_bad_quantity(
    client: Client, run_calls: list[dict[str, Any]], quantity: Any
) -> None:
    response = post(client, allocate_body(quantity=quantity))
    fields = response.get_json()["error"]["fields"]

    assert response.status_code == 400
    assert list(fields) == ["quantity"]
    assert run_calls == []


def test_allocate_quantity_over_limit_names_limit(client: Client) -> None:
    response = post(client, allocate_body(quantity=11))

    assert response.get_json()["error"]["fields"]["quantity"] == (
        "must be at most 10 per allocation"
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"user_info": {"email": EMAIL}}, "user_info.name"),
        ({"user_info": {"name": "  "}}, "user_info.name"),
        ({"user_info": {"name": "x" * 201}}, "user_info.name"),
        ({"user_info": {"name": 7}}, "user_info.name"),
        ({"user_info": {"name": NAME, "email": "not-an-email"}}, "user_info.email"),
        ({"user_info": "Ada"}, "user_info"),
        ({"purpose": "x" * 501}, "purpose"),
        ({"resource_type": 3}, "resource_type"),
        ({"resource_type": "t3"}, "resource_type"),
    ],
)
def test_allocate_names_invalid_field(
    client: Client, overrides: dict[str, Any], field: str
) -> None:
    response = post(client, allocate_body(**overrides))
    fields = response.get_json()["error"]["fields"]

    assert response.status_code == 400
    assert list(fields) == [field]


def test_allocate_names_every_invalid_field(client: Client) -> None:
    body = {"resource_type": "t3", "quantity": 0, "user_info": {"name": ""}}

    response = post(client, body)
    fields = response.get_json()["error"]["fields"]

    assert set(fields) == {"resource_type", "quantity", "user_info.name"}


def test_allocate_rejects_type_not_allowed(
    client: Client, run_calls: list[dict[str, Any]]
) -> None:
    response = post(client, allocate_body(resource_type="p5.48xlarge"))
    error = response.get_json()["error"]

    assert response.status_code == 403
    assert error["code"] == "not_allowed"
    assert "t3.micro" in error["hint"]
    assert run_calls == []


def test_allocate_rejects_type_unknown_to_ec2(
    settings: Settings, service: AllocationService
) -> None:
    service.policy.allowed_instance_types = ("t3.micro", "zz9.large")
    client = Client(ApiApp(Runtime(settings, service=service)))

    response = post(client, allocate_body(resource_type="zz9.large"))
    fields = response.get_json()["error"]["fields"]

    assert response.status_code == 400
    assert "zz9.large" in fields["resource_type"]


# Idempotency


def test_idempotency_key_replay_returns_first_allocation(
    client: Client, service: AllocationService, run_calls: list[dict[str, Any]]
) -> None:
    headers = {"Idempotency-Key": "order-42"}

    first = post(client, allocate_body(), headers=headers)
    second = post(client, allocate_body(), headers=headers)

    assert first.status_code == 200
    assert second.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["allocation_id"] == first.get_json()["allocation_id"]
    assert len(run_calls) == 1
    assert len(instances_of(service, first.get_json()["allocation_id"])) == 1


def test_idempotency_key_reuse_with_other_body_is_409(
    client: Client, run_calls: list[dict[str, Any]]
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    post(client, allocate_body(quantity=1), headers=headers)

    response = post(client, allocate_body(quantity=2), headers=headers)

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert len(run_calls) == 1


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\tkey"])
def test_idempotency_key_invalid_is_400(client: Client, key: str) -> None:
    response = post(client, allocate_body(), headers={"Idempotency-Key": key})

    assert response.status_code == 400
    assert list(response.get_json()["error"]["fields"]) == ["Idempotency-Key"]


def test_idempotency_concurrent_duplicates_launch_once(
    server: int,
    service: AllocationService,
    run_calls: list[dict[str, Any]],
) -> None:
    thread_count = 8
    barrier = threading.Barrier(thread_count)
    results: list[tuple[int, dict[str, str], dict[str, Any]]] = []
    failures: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(
                http_request(
                    server,
                    "POST",
                    "/resources/allocate",
                    allocate_body(quantity=3),
                    {"Idempotency-Key": "same-moment"},
                )
            )
        except BaseException as error:  # reported by the asserts below
            failures.append(error)

    threads = [threading.Thread(target=send) for _ in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert [status for status, _, _ in results] == [200] * thread_count
    allocation_ids = {body["allocation_id"] for _, _, body in results}
    assert len(allocation_ids) == 1
    assert len(run_calls) == 1
    assert len(instances_of(service, allocation_ids.pop())) == 3
    replayed = [h for _, h, _ in results if h.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == thread_count - 1
    # Duplicates wait for the first launch, so every response lists the instances.
    assert all(len(body["instances"]) == 3 for _, _, body in results)


# AWS errors


def test_allocate_capacity_error_is_503(
    client: Client, service: AllocationService
) -> None:
    inject_error(
        service,
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient t3.micro capacity",
        500,
    )

    response = post(client, allocate_body())
    body = response.get_json()

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert body["status"] == "error"
    assert body["error"]["code"] == "InsufficientInstanceCapacity"
    assert "t3.micro" in body["error"]["message"]
    assert "us-east-1a" in body["error"]["message"]
    assert ALLOCATION_ID_PATTERN.fullmatch(body["allocation_id"])


def test_allocate_vcpu_limit_is_422(client: Client, service: AllocationService) -> None:
    inject_error(
        service,
        "VcpuLimitExceeded",
        "You have requested more vCPU capacity than your current vCPU limit of 32 "
        "allows for the instance bucket that the specified instance type belongs to",
        400,
    )

    response = post(client, allocate_body())
    error = response.get_json()["error"]

    assert response.status_code == 422
    assert error["code"] == "VcpuLimitExceeded"
    assert "vCPU limit of 32" in error["message"]
    assert "Service Quotas" in error["hint"]


def test_allocate_unauthorized_operation_is_403(
    client: Client, service: AllocationService
) -> None:
    inject_error(
        service,
        "UnauthorizedOperation",
        "You are not authorized to perform this operation. Encoded message: abc",
        403,
    )

    response = post(client, allocate_body())
    error = response.get_json()["error"]

    assert response.status_code == 403
    assert error["code"] == "UnauthorizedOperation"
    assert "Encoded message" not in error["message"]


def test_failed_allocation_record_shows_failure(
    client: Client, service: AllocationService
) -> None:
    inject_error(service, "InsufficientInstanceCapacity", "no capacity", 500)
    allocation_id = post(client, allocate_body()).get_json()["allocation_id"]

    response = client.get(f"/resources/allocations/{allocation_id}", headers=AUTH)
    body = response.get_json()

    assert response.status_code == 200
    assert body["state"] == "failed"
    assert body["failure"]["code"] == "InsufficientInstanceCapacity"
    assert body["instances"] == []


def test_failed_allocation_replay_repeats_error(
    client: Client, service: AllocationService
) -> None:
    calls = inject_error(service, "InsufficientInstanceCapacity", "no capacity", 500)
    headers = {"Idempotency-Key": "order-44"}
    first = post(client, allocate_body(), headers=headers)
    calls_before_replay = len(calls)

    second = post(client, allocate_body(), headers=headers)

    assert second.status_code == first.status_code
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["allocation_id"] == first.get_json()["allocation_id"]
    assert second.get_json()["error"]["code"] == "InsufficientInstanceCapacity"
    assert len(calls) == calls_before_replay


def test_unexpected_error_is_json_500(
    client: Client, service: AllocationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(service, "allocate", explode)

    response = post(client, allocate_body())
    text = response.get_data(as_text=True)

    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert "internal detail" not in text
    assert "Traceback" not in text


# Logging


def test_request_log_omits_token_and_email(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # botocore logs request bodies at DEBUG, so the product runs it at
    # WARNING (bot/log.py); the product's own loggers are checked at DEBUG.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bot")

    response = post(client, allocate_body(), headers={"Idempotency-Key": "order-45"})
    post(client, allocate_body(quantity=0))
    post(client, allocate_body(), headers={"Authorization": "Bearer wrong-secret"})
    allocation_id = response.get_json()["allocation_id"]

    assert TOKEN not in caplog.text
    assert "wrong-secret" not in caplog.text
    assert EMAIL not in caplog.text
    assert NAME not in caplog.text
    assert "load test" not in caplog.text
    assert f"POST /resources/allocate 200 allocation={allocation_id}" in caplog.text
    assert "POST /resources/allocate 400" in caplog.text
    assert "error=unauthorized" in caplog.text


def test_trailing_slash_served_without_redirect(client: Client) -> None:
    response = client.get("/healthz/")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


# Hostile input


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("user_info.name", allocate_body(user_info={"name": "A\u0000\u001b[31mB"})),
        ("user_info.name", allocate_body(user_info={"name": "Ada\nLovelace"})),
        (
            "user_info.email",
            allocate_body(user_info={"name": NAME, "email": "a\x07@b.c"}),
        ),
        ("purpose", allocate_body(purpose="load\u001b]0;title\u0007test")),
    ],
)
def test_allocate_rejects_control_characters(
    client: Client, service: AllocationService, field: str, body: dict[str, Any]
) -> None:
    response = post(client, body)

    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]
    assert service.provisioner.ec2.describe_instances()["Reservations"] == []


@pytest.mark.parametrize(
    "body",
    ["[" * 30000 + "]" * 30000, '{"user_info": ' + '{"a": ' * 5000 + "1" + "}" * 5001],
)
def test_allocate_rejects_deep_nesting(client: Client, body: str) -> None:
    response = post(client, body)

    assert response.status_code == 400
    assert response.get_json()["error"]["fields"]["body"] == "is nested too deeply"


def test_allocate_rejects_huge_number_plainly(client: Client) -> None:
    response = post(client, '{"quantity": ' + "9" * 5000 + "}")
    problem = response.get_json()["error"]["fields"]["body"]

    assert response.status_code == 400
    assert problem == "has a number too long"


def test_idempotency_key_ignores_surrounding_whitespace(
    client: Client, run_calls: list[dict[str, Any]]
) -> None:
    first = post(client, allocate_body(), headers={"Idempotency-Key": "ws-key"})
    second = post(client, allocate_body(), headers={"Idempotency-Key": "ws-key \t"})

    assert second.get_json()["allocation_id"] == first.get_json()["allocation_id"]
    assert len(run_calls) == 1


def test_replayed_capacity_error_asks_for_new_key(
    client: Client, service: AllocationService
) -> None:
    inject_error(service, "InsufficientInstanceCapacity", "no capacity", 500)
    headers = {"Idempotency-Key": "order-46"}
    first = post(client, allocate_body(), headers=headers)

    second = post(client, allocate_body(), headers=headers)

    assert first.headers.get("Retry-After") is not None
    assert second.headers.get("Retry-After") is None
    assert "new Idempotency-Key" in second.get_json()["error"]["hint"]


def test_launch_survives_failed_ledger_save(
    client: Client, service: AllocationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2 launched, DynamoDB failed: the client still gets the instance IDs."""
    from bot.errors import AwsUnavailable

    def fail_save(*_: Any, **__: Any) -> None:
        raise AwsUnavailable("InternalServerError", "Could not update", http_status=503)

    monkeypatch.setattr(service.ledger, "save", fail_save)

    response = post(client, allocate_body())
    body = response.get_json()

    assert response.status_code == 200
    assert len(body["instances"]) == 1
    assert body["instances"][0]["instance_id"].startswith("i-")
