"""The allocation service end to end against moto: record, launch, follow."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import pytest

from bot.allocations import STALLED_AFTER_SECONDS, AllocationService, StatusEvent
from bot.config import Settings
from bot.errors import (
    AllocationNotFound,
    AwsRejected,
    AwsUnavailable,
    IdempotencyConflict,
    InvalidRequest,
    NotAllowed,
)
from bot.ledger import to_item as ledger_item
from bot.models import (
    AllocationRequest,
    AllocationState,
    Instance,
    Requester,
    utc_now,
)
from tests.aws_faults import (
    count_calls,
    create_x86_64_image,
    fail_operation,
    remove_backoff,
    watch_operation,
)

REGION = "us-east-1"  # the region of the `settings` fixture


@dataclass
class FakeClock:
    """A monotonic clock that only moves when the service sleeps."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class EventLog:
    """An event sink that keeps what the service emitted."""

    events: list[StatusEvent] = field(default_factory=list)

    def __call__(self, event: StatusEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]


@pytest.fixture(autouse=True)
def fast_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip moto's AMI catalogue and reuse parsed models, to keep each test short."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(
    aws: None, settings: Settings, clock: FakeClock
) -> Callable[..., AllocationService]:
    """Build a service on the fake clock, with keyword arguments overriding settings."""

    def build(**overrides: Any) -> AllocationService:
        service = AllocationService(
            settings.model_copy(update=overrides),
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
        service.ledger.ensure_table()
        create_clients(service)
        return service

    return build


@pytest.fixture
def ec2(aws: None) -> Any:
    """A plain moto EC2 client for checking what the service launched."""
    return boto3.session.Session().client("ec2", region_name=REGION)


def create_clients(service: AllocationService) -> None:
    """Create the service's clients now, on the test thread, not in workers."""
    assert service.provisioner.ec2 is not None
    assert service.provisioner.ssm is not None
    assert service.ledger.dynamodb is not None


def make_request(
    instance_type: str = "t3.micro", quantity: int = 1, purpose: str | None = None
) -> AllocationRequest:
    return AllocationRequest(
        instance_type=instance_type,
        quantity=quantity,
        purpose=purpose,
        requester=Requester(source="slack", user_id="U0123ABCD", name="Ada"),
    )


def instances_by_allocation(ec2: Any) -> dict[str, list[str]]:
    """Group moto's instances by their AllocationId tag, leaving out untagged ones."""
    groups: dict[str, list[str]] = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for item in reservation["Instances"]:
            tags = {tag["Key"]: tag["Value"] for tag in item.get("Tags", [])}
            if "AllocationId" in tags:
                groups.setdefault(tags["AllocationId"], []).append(item["InstanceId"])
    return groups


def run_at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` on `count` threads released together.

    Returns each thread's result, or the exception it raised.
    """
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as error:  # reported to the test through `results`
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def scripted_describe(*steps: list[Instance]) -> Callable[..., list[Instance]]:
    """Return a describe stand-in that returns each step in turn, then the last."""
    remaining: Iterator[list[Instance]] = iter(steps)
    last: list[list[Instance]] = [steps[-1]]

    def describe(instance_ids: Any) -> list[Instance]:
        step = next(remaining, last[0])
        return [instance.model_copy() for instance in step]

    return describe


# The whole flow


def test_allocate_emits_events_in_order(service: AllocationService) -> None:
    log = EventLog()
    allocation, created = service.allocate(make_request(), on_event=log)

    assert created is True
    assert log.kinds == ["recorded", "launched", "running"]
    assert {event.allocation.allocation_id for event in log.events} == {
        allocation.allocation_id
    }


def test_allocate_records_running_instances(service: AllocationService) -> None:
    allocation, _ = service.allocate(make_request(quantity=2))

    record = service.ledger.get(allocation.allocation_id)
    assert record is not None
    assert record.state is AllocationState.RUNNING
    assert record.architecture == "x86_64"
    assert record.image_id is not None
    assert len(record.instances) == 2
    for instance in record.instances:
        assert instance.state == "running"
        assert instance.availability_zone == record.availability_zone
        assert instance.private_ip


def test_allocate_tags_instances_with_allocation_id(
    service: AllocationService, ec2: Any
) -> None:
    allocation, _ = service.allocate(make_request(quantity=2))

    groups = instances_by_allocation(ec2)
    assert list(groups) == [allocation.allocation_id]
    assert sorted(groups[allocation.allocation_id]) == sorted(
        instance.instance_id for instance in allocation.instances
    )


def test_allocate_sends_allocation_id_as_client_token(
    service: AllocationService,
) -> None:
    watch = watch_operation(service.provisioner.ec2, "RunInstances")
    allocation, _ = service.allocate(make_request())
    assert watch.client_tokens == [allocation.allocation_id]


# Checks before anything is launched


def test_allocate_rejects_type_not_allowed(service: AllocationService) -> None:
    calls = count_calls(service.provisioner.ec2)
    with pytest.raises(NotAllowed):
        service.allocate(make_request(instance_type="p4d.24xlarge"))
    assert sum(calls.values()) == 0


def test_allocate_rejects_count_over_limit(service: AllocationService) -> None:
    calls = count_calls(service.provisioner.ec2)
    with pytest.raises(InvalidRequest) as raised:
        service.allocate(make_request(quantity=11))
    assert list(raised.value.fields) == ["quantity"]
    assert sum(calls.values()) == 0


def test_allocate_rejects_mismatched_ami(
    make_service: Callable[..., AllocationService], ec2: Any
) -> None:
    service = make_service(ami_id=create_x86_64_image(ec2))
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])

    with pytest.raises(InvalidRequest) as raised:
        service.allocate(make_request(instance_type="t4g.micro"))

    assert "instance_type" in raised.value.fields
    assert runs["RunInstances"] == 0
    assert instances_by_allocation(ec2) == {}


# Idempotency


def test_allocate_same_key_launches_once(service: AllocationService) -> None:
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])

    first, first_created = service.allocate(make_request(), idempotency_key="key-1")
    second, second_created = service.allocate(make_request(), idempotency_key="key-1")

    assert first_created is True
    assert second_created is False
    assert second.allocation_id == first.allocation_id
    assert second.state is AllocationState.RUNNING
    assert runs["RunInstances"] == 1


def test_allocate_same_key_concurrently_launches_once(
    service: AllocationService, ec2: Any
) -> None:
    create_clients(service)
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])

    results = run_at_once(
        8, lambda _: service.allocate(make_request(), idempotency_key="same-key")
    )

    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    assert sum(created for _, created in results) == 1
    assert len({allocation.allocation_id for allocation, _ in results}) == 1
    assert runs["RunInstances"] == 1
    assert [len(ids) for ids in instances_by_allocation(ec2).values()] == [1]


def record_stalled(service: AllocationService, key: str, age_seconds: float) -> str:
    """Record a request as a process would that stopped before launching it."""
    allocation, _ = service.submit(make_request(), idempotency_key=key)
    allocation.updated_at = utc_now() - timedelta(seconds=age_seconds)
    service.ledger.dynamodb.put_item(
        TableName=service.ledger.table_name, Item=ledger_item(allocation)
    )
    return allocation.allocation_id


def test_allocate_launches_stalled_record(service: AllocationService) -> None:
    allocation_id = record_stalled(service, "stalled", STALLED_AFTER_SECONDS + 60)

    allocation, created = service.allocate(make_request(), idempotency_key="stalled")

    assert created is True
    assert allocation.allocation_id == allocation_id
    assert allocation.state is AllocationState.RUNNING
    assert len(allocation.instances) == 1


def test_allocate_leaves_recent_record_alone(service: AllocationService) -> None:
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])
    record_stalled(service, "in-progress", 5)

    allocation, created = service.allocate(
        make_request(), idempotency_key="in-progress"
    )

    assert created is False
    assert allocation.state is AllocationState.REQUESTED
    assert runs["RunInstances"] == 0


def test_stalled_record_is_launched_once(service: AllocationService, ec2: Any) -> None:
    create_clients(service)
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])
    record_stalled(service, "stalled-race", STALLED_AFTER_SECONDS + 60)

    results = run_at_once(
        6, lambda _: service.allocate(make_request(), idempotency_key="stalled-race")
    )

    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    assert sum(created for _, created in results) == 1
    assert runs["RunInstances"] == 1


def test_allocate_rejects_key_reused_for_other_request(
    service: AllocationService,
) -> None:
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])
    service.allocate(make_request(quantity=1), idempotency_key="key-2")

    with pytest.raises(IdempotencyConflict) as raised:
        service.allocate(make_request(quantity=2), idempotency_key="key-2")

    assert raised.value.http_status == 409
    assert runs["RunInstances"] == 1


# Reading records


def test_refresh_updates_pending_record(service: AllocationService) -> None:
    allocation, _ = service.allocate(make_request(), follow=False)
    stored = service.ledger.get(allocation.allocation_id)
    assert stored is not None
    assert stored.state is AllocationState.PENDING

    refreshed = service.refresh(allocation.allocation_id)

    assert refreshed.state is AllocationState.RUNNING
    stored = service.ledger.get(allocation.allocation_id)
    assert stored is not None
    assert stored.state is AllocationState.RUNNING
    assert stored.instances[0].private_ip


def test_get_raises_for_unknown_id(service: AllocationService) -> None:
    with pytest.raises(AllocationNotFound) as raised:
        service.get("alloc-doesnotexist0000")
    assert raised.value.http_status == 404
    assert "alloc-doesnotexist0000" in raised.value.message


# Launch errors


def test_allocate_fails_on_capacity_error(
    service: AllocationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_backoff(monkeypatch)
    fault = fail_operation(
        service.provisioner.ec2,
        "RunInstances",
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient m5.8xlarge capacity in the "
        "Availability Zone you requested (us-east-1a).",
        status=500,
        times=5,
    )
    log = EventLog()

    with pytest.raises(AwsUnavailable) as raised:
        service.allocate(make_request("m5.8xlarge", 4), on_event=log)

    zones = [a.params["Placement.AvailabilityZone"][0] for a in fault.attempts]
    assert len(zones) == len(set(zones))
    assert log.kinds == ["recorded", "failed"]
    record = service.ledger.get(raised.value.allocation_id or "")
    assert record is not None
    assert record.state is AllocationState.FAILED
    assert record.failure is not None
    assert record.failure.code == "InsufficientInstanceCapacity"
    assert "m5.8xlarge" in record.failure.message
    assert record.availability_zone is not None
    assert record.availability_zone in record.failure.message
    assert record.failure.hint is not None
    assert "another instance type" in record.failure.hint
    assert "later" in record.failure.hint


def test_allocate_fails_on_vcpu_limit(service: AllocationService, ec2: Any) -> None:
    fail_operation(
        service.provisioner.ec2,
        "RunInstances",
        "VcpuLimitExceeded",
        "You have requested more vCPU capacity than your current vCPU limit of "
        "32 allows for the instance bucket that the specified instance type "
        "belongs to.",
    )

    with pytest.raises(AwsRejected) as raised:
        service.allocate(make_request("c5.4xlarge", 3))

    record = service.ledger.get(raised.value.allocation_id or "")
    assert record is not None
    assert record.state is AllocationState.FAILED
    assert record.instances == []
    assert record.failure is not None
    assert "limit of 32" in record.failure.message
    assert record.failure.hint is not None
    assert "Service Quotas" in record.failure.hint
    assert instances_by_allocation(ec2) == {}


def test_concurrent_allocations_survive_throttling(
    service: AllocationService, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_backoff(monkeypatch)
    create_clients(service)
    # Four throttled calls in all, fewer than the five attempts of one call,
    # so every allocation can still succeed whichever thread gets them.
    fault = fail_operation(
        service.provisioner.ec2,
        "RunInstances",
        "RequestLimitExceeded",
        "Request limit exceeded.",
        status=503,
        times=4,
    )

    results = run_at_once(
        10,
        lambda i: service.allocate(make_request(quantity=2), idempotency_key=f"k{i}"),
    )

    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    ids = {allocation.allocation_id for allocation, _ in results}
    assert len(ids) == 10
    for allocation_id in ids:
        record = service.ledger.get(allocation_id)
        assert record is not None
        assert record.state is AllocationState.RUNNING

    groups = instances_by_allocation(ec2)
    assert set(groups) == ids
    assert all(len(instance_ids) == 2 for instance_ids in groups.values())

    assert sum(attempt.failed for attempt in fault.attempts) == 4
    passed = Counter(a.client_token for a in fault.attempts if not a.failed)
    assert passed == Counter(ids)
    assert set(fault.client_tokens) == ids


# Following instances to running


def test_follow_fails_when_instance_dies(
    make_service: Callable[..., AllocationService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service()
    allocation, _ = service.allocate(make_request(), follow=False)
    instance_id = allocation.instances[0].instance_id
    reason = "Server.InternalError: Internal error on launch"
    monkeypatch.setattr(
        service.provisioner,
        "describe",
        scripted_describe(
            [Instance(instance_id=instance_id, state="pending")],
            [
                Instance(
                    instance_id=instance_id, state="terminated", state_reason=reason
                )
            ],
        ),
    )
    log = EventLog()

    followed = service.follow(allocation, on_event=log)

    assert followed.state is AllocationState.FAILED
    assert log.kinds == ["failed"]
    assert followed.failure is not None
    assert followed.failure.code == "instance_stopped"
    assert instance_id in followed.failure.message
    assert reason in followed.failure.message
    stored = service.ledger.get(allocation.allocation_id)
    assert stored is not None
    assert stored.state is AllocationState.FAILED


def test_follow_reports_instance_terminated_in_ec2(
    make_service: Callable[..., AllocationService], ec2: Any
) -> None:
    service = make_service()
    allocation, _ = service.allocate(make_request(), follow=False)
    instance_id = allocation.instances[0].instance_id
    ec2.terminate_instances(InstanceIds=[instance_id])

    followed = service.follow(allocation)

    assert followed.state is AllocationState.FAILED
    assert followed.failure is not None
    assert instance_id in followed.failure.message
    assert "terminated" in followed.failure.message


def test_follow_times_out_when_instances_stay_pending(
    make_service: Callable[..., AllocationService],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = make_service()
    allocation, _ = service.allocate(make_request(), follow=False)
    instance_id = allocation.instances[0].instance_id
    monkeypatch.setattr(
        service.provisioner,
        "describe",
        scripted_describe([Instance(instance_id=instance_id, state="pending")]),
    )
    log = EventLog()
    started = time.monotonic()

    followed = service.follow(
        allocation, on_event=log, poll_seconds=5, timeout_seconds=60
    )

    assert time.monotonic() - started < 5  # far below the 60 s it would really wait
    assert followed.state is AllocationState.FAILED
    assert followed.failure is not None
    assert followed.failure.code == "status_timeout"
    assert log.kinds == ["failed"]
    assert clock.now - 1000.0 >= 60
    assert set(clock.sleeps) == {5}


def test_follow_keeps_polling_after_failed_describe(
    make_service: Callable[..., AllocationService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service()
    allocation, _ = service.allocate(make_request(), follow=False)
    real_describe = service.provisioner.describe
    calls: list[int] = []

    def describe(instance_ids: Any) -> list[Instance]:
        calls.append(1)
        if len(calls) == 1:
            raise AwsUnavailable("RequestLimitExceeded", "throttled")
        return real_describe(instance_ids)

    monkeypatch.setattr(service.provisioner, "describe", describe)

    followed = service.follow(allocation)

    assert followed.state is AllocationState.RUNNING
    assert len(calls) == 2


# Failures around the launch


def test_failing_event_sink_does_not_stop_allocation(
    service: AllocationService,
) -> None:
    def broken_sink(event: StatusEvent) -> None:
        raise TimeoutError("Slack did not answer")

    allocation, _ = service.allocate(make_request(), on_event=broken_sink)

    assert allocation.state is AllocationState.RUNNING
    assert service.get(allocation.allocation_id).state is AllocationState.RUNNING


def test_unparseable_launch_response_marks_outcome_unknown(
    service: AllocationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def garbled(*_: Any, **__: Any) -> None:
        raise ValueError("invalid XML received")

    monkeypatch.setattr(service.provisioner, "launch", garbled)

    with pytest.raises(AwsUnavailable) as raised:
        service.allocate(make_request())

    record = service.get(raised.value.allocation_id or "")
    assert raised.value.code == "launch_outcome_unknown"
    assert record.state is AllocationState.FAILED
    assert "AllocationId=" in (record.failure.hint if record.failure else "")


def test_stalled_record_adopts_tagged_instances(
    service: AllocationService, ec2: Any
) -> None:
    """The process launched, then stopped before saving: nothing launches twice."""
    allocation_id = record_stalled(service, "adopt", STALLED_AFTER_SECONDS + 60)
    plan = service.provisioner.plan("t3.micro")
    service.provisioner.launch(plan, 1, allocation_id, {"AllocationId": allocation_id})
    runs = count_calls(service.provisioner.ec2, ["RunInstances"])

    allocation, created = service.allocate(make_request(), idempotency_key="adopt")

    assert created is True
    assert runs["RunInstances"] == 0
    assert allocation.state is AllocationState.RUNNING
    assert len(instances_by_allocation(ec2)[allocation_id]) == 1


def test_refresh_reconciles_requested_record(service: AllocationService) -> None:
    allocation_id = record_stalled(service, "refresh-me", 1)
    plan = service.provisioner.plan("t3.micro")
    service.provisioner.launch(plan, 1, allocation_id, {"AllocationId": allocation_id})

    allocation = service.refresh(allocation_id)

    assert allocation.state is AllocationState.RUNNING
    assert len(allocation.instances) == 1


def test_failed_save_still_reports_running(
    service: AllocationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog()
    real_save = service.ledger.save

    def save(allocation: Any) -> Any:
        if allocation.state is AllocationState.RUNNING:
            raise AwsUnavailable("InternalServerError", "DynamoDB failed")
        return real_save(allocation)

    monkeypatch.setattr(service.ledger, "save", save)

    service.allocate(make_request(), on_event=log)

    assert log.kinds == ["recorded", "launched", "running"]


def test_follow_ends_when_process_stops(
    service: AllocationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = [Instance(instance_id="i-0000000000000001", state="pending")]
    monkeypatch.setattr(service.provisioner, "describe", scripted_describe(pending))
    allocation, _ = service.allocate(make_request(), follow=False)
    service.stopping.set()

    followed = service.follow(allocation, poll_seconds=60, timeout_seconds=600)

    assert followed.state is AllocationState.PENDING


def test_refresh_clears_timeout_once_running(
    service: AllocationService, clock: FakeClock
) -> None:
    allocation, _ = service.allocate(make_request(), follow=False)
    instance_id = allocation.instances[0].instance_id
    pending = [Instance(instance_id=instance_id, state="pending")]
    real_describe = service.provisioner.describe
    service.provisioner.describe = scripted_describe(pending)  # type: ignore[method-assign]
    service._monotonic = clock.monotonic
    service._sleep = clock.sleep
    service.follow(allocation, poll_seconds=1, timeout_seconds=3)
    service.provisioner.describe = real_describe  # type: ignore[method-assign]

    refreshed = service.refresh(allocation.allocation_id)

    assert allocation.state is AllocationState.FAILED
    assert refreshed.state is AllocationState.RUNNING
    assert refreshed.failure is None


def test_duplicate_of_unsaved_launch_finds_instances(
    service: AllocationService,
) -> None:
    allocation_id = record_stalled(service, "unsaved", 5)
    plan = service.provisioner.plan("t3.micro")
    service.provisioner.launch(plan, 1, allocation_id, {"AllocationId": allocation_id})

    allocation, created = service.allocate(make_request(), idempotency_key="unsaved")

    assert created is False
    assert allocation.state is AllocationState.PENDING
    assert len(allocation.instances) == 1
