"""Inject AWS error responses into a boto3 client that talks to moto in-process.

moto never returns capacity, limit, throttling or permission errors, so tests
make a chosen operation fail N times with a given code, message and HTTP
status, and let every other call reach moto.

The fault returns its response on `before-send`, inside botocore's retry loop
(`Endpoint._send_request` calls `_do_get_response` once per attempt and emits
`before-send.<service>.<Operation>` there), so botocore's retry handler gets
each injected error exactly as it would see one from AWS. A `before-call`
handler would replace the whole call outside that loop, and no retry would
happen.

botocore 1.44 calls every `before-send` handler and takes the first response
that is not None, so a fault registered ahead of moto would still let moto
execute the call and launch instances that nobody sees. `FaultInjector`
therefore takes moto's handler off the client and calls it itself only for
attempts that it does not fail. Each client has its own copy of the event
handlers, so other clients keep talking to moto directly.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import botocore.retries.standard
import botocore.session
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

INJECTOR_ATTRIBUTE = "_test_fault_injector"


@dataclass(frozen=True)
class Attempt:
    """One request that reached the fault, and whether the fault failed it."""

    params: dict[str, list[str]]
    failed: bool

    @property
    def client_token(self) -> str | None:
        values = self.params.get("ClientToken")
        return values[0] if values else None


@dataclass
class Fault:
    """Fail `operation` on its first `times` attempts, then pass it to moto."""

    operation: str
    code: str
    message: str
    status: int = 400
    times: int = 1
    attempts: list[Attempt] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def client_tokens(self) -> list[str | None]:
        """Return the ClientToken of every attempt, in the order they arrived."""
        return [attempt.client_token for attempt in self.attempts]

    def respond(self, request: AWSPreparedRequest) -> AWSResponse | None:
        """Record the attempt and return the error response while faults remain."""
        params = _query_parameters(request)
        with self._lock:
            failed = sum(attempt.failed for attempt in self.attempts) < self.times
            self.attempts.append(Attempt(params, failed))
        if not failed:
            return None
        return error_response(request.url, self.code, self.message, self.status)


class FaultInjector:
    """Sends each attempt of a faulted operation to its Fault before moto."""

    def __init__(self, client: Any):
        self.faults: dict[str, Fault] = {}
        events = client.meta.events
        events.unregister("before-send", botocore_stubber)
        events.register("before-send", self._before_send)

    def _before_send(
        self, request: AWSPreparedRequest, event_name: str, **kwargs: Any
    ) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        fault = self.faults.get(operation)
        if fault is not None:
            response = fault.respond(request)
            if response is not None:
                return response
        return botocore_stubber(event_name=event_name, request=request, **kwargs)


def fail_operation(
    client: Any,
    operation: str,
    code: str,
    message: str = "",
    *,
    status: int = 400,
    times: int = 1,
) -> Fault:
    """Make `operation` (such as "RunInstances") fail `times` times on `client`.

    Returns the Fault, which records the query parameters of every attempt.
    """
    injector = getattr(client, INJECTOR_ATTRIBUTE, None)
    if injector is None:
        injector = FaultInjector(client)
        setattr(client, INJECTOR_ATTRIBUTE, injector)
    fault = Fault(operation, code, message, status=status, times=times)
    injector.faults[operation] = fault
    return fault


def watch_operation(client: Any, operation: str) -> Fault:
    """Record every attempt of `operation` on `client` without failing any."""
    return fail_operation(client, operation, "NotInjected", times=0)


def error_response(url: str, code: str, message: str, status: int) -> AWSResponse:
    """Build an error response in the XML form of the EC2 Query API."""
    body = (
        "<Response><Errors><Error>"
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        "</Error></Errors><RequestID>fault-injected</RequestID></Response>"
    )
    headers = {"Content-Type": "text/xml;charset=UTF-8"}
    return AWSResponse(url, status, headers, MockRawResponse(body))


def count_calls(client: Any, operations: Iterable[str] | None = None) -> Counter:
    """Count API calls by operation name from now on, as the caller makes them.

    Counts calls, not attempts: a call that botocore retries counts once.
    """
    counted = set(operations) if operations is not None else None
    counts: Counter = Counter()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        if counted is None or model.name in counted:
            with lock:
                counts[model.name] += 1

    client.meta.events.register("before-call", count)
    return counts


def remove_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make botocore retry at once, so retry tests take milliseconds."""
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff,
        "delay_amount",
        lambda self, context: 0,
    )


def _query_parameters(request: AWSPreparedRequest) -> dict[str, list[str]]:
    body = request.body or b""
    if isinstance(body, bytes):
        body = body.decode()
    return parse_qs(body) if isinstance(body, str) else {}


def create_x86_64_image(ec2: Any) -> str:
    """Register an x86_64 AMI in moto by imaging a throwaway instance.

    moto's AMI catalogue is switched off in these tests, and moto gives an
    instance launched from an unknown AMI the x86_64 architecture.
    """
    source = ec2.run_instances(ImageId="ami-00000000", MinCount=1, MaxCount=1)
    instance_id = source["Instances"][0]["InstanceId"]
    image_id = ec2.create_image(InstanceId=instance_id, Name="x86-64-test")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance_id])
    return image_id
