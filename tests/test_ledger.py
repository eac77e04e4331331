"""The allocation ledger against moto's DynamoDB."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.config import Settings
from bot.errors import AwsUnavailable
from bot.ledger import Ledger
from bot.models import (
    Allocation,
    AllocationState,
    Failure,
    Instance,
    Requester,
    SlackDestination,
)
from tests.aws_faults import count_calls


@pytest.fixture
def ledger(aws: None, settings: Settings) -> Ledger:
    ledger = Ledger(settings)
    ledger.ensure_table()
    return ledger


def make_allocation(allocation_id: str = "alloc-0000000000000001") -> Allocation:
    return Allocation(
        allocation_id=allocation_id,
        state=AllocationState.REQUESTED,
        instance_type="t3.micro",
        quantity=1,
        requester=Requester(source="api", name="Ada"),
        region="us-east-1",
    )


def full_allocation() -> Allocation:
    """Return a record with every field set to a value other than its default."""
    return Allocation(
        allocation_id="alloc-00000000000000ff",
        state=AllocationState.FAILED,
        instance_type="m5.8xlarge",
        quantity=2,
        purpose="R&D <prod> load test",
        requester=Requester(
            source="slack",
            user_id="U0123ABCD",
            team_id="T0123ABCD",
            name="Ada Lovelace",
            email="ada@example.com",
        ),
        report_to=SlackDestination(
            channel_id="D0000000001",
            thread_ts="1700000000.000100",
            requested_channel_id="C0000000001",
        ),
        region="us-east-1",
        availability_zone="us-east-1c",
        image_id="ami-0123456789abcdef0",
        architecture="x86_64",
        instances=[
            Instance(
                instance_id="i-0123456789abcdef0",
                state="terminated",
                availability_zone="us-east-1c",
                private_ip="10.0.0.12",
                public_ip="54.0.0.12",
                public_dns="ec2-54-0-0-12.compute-1.amazonaws.com",
                state_reason="Server.InternalError: Internal error on launch",
            ),
            Instance(instance_id="i-0123456789abcdef1", state="pending"),
        ],
        failure=Failure(
            code="instance_stopped",
            message="Instances stopped while starting",
            hint="Try again",
        ),
        request_fingerprint="0123456789abcdef0123456789abcdef",
        created_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        updated_at=datetime(2024, 5, 1, 12, 5, 0, tzinfo=UTC),
        expires_at=datetime(2024, 5, 2, 12, 0, 0, tzinfo=UTC),
    )


def test_ensure_table_creates_missing_table_once(
    aws: None, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.ledger")
    ledger = Ledger(settings)

    assert ledger.ensure_table() is True
    assert ledger.ensure_table() is False

    table = ledger.dynamodb.describe_table(TableName=settings.allocations_table)
    assert table["Table"]["KeySchema"] == [
        {"AttributeName": "allocation_id", "KeyType": "HASH"}
    ]
    created_lines = [
        record
        for record in caplog.records
        if "Created DynamoDB table" in record.message
    ]
    assert len(created_lines) == 1


def test_ensure_table_disabled_names_table(aws: None, settings: Settings) -> None:
    ledger = Ledger(settings.model_copy(update={"create_table": False}))
    calls = count_calls(ledger.dynamodb)

    with pytest.raises(AwsUnavailable) as raised:
        ledger.ensure_table()

    assert settings.allocations_table in raised.value.message
    assert raised.value.hint is not None
    assert "ALLOCATIONS_TABLE_CREATE" in raised.value.hint
    assert calls["CreateTable"] == 0


def test_ensure_table_disabled_accepts_existing(
    ledger: Ledger, settings: Settings
) -> None:
    other = Ledger(settings.model_copy(update={"create_table": False}))
    assert other.ensure_table() is False


def test_insert_is_conditional(ledger: Ledger) -> None:
    first = make_allocation()
    second = make_allocation()
    second.quantity = 5

    assert ledger.insert(first) is True
    assert ledger.insert(second) is False

    stored = ledger.get(first.allocation_id)
    assert stored is not None
    assert stored.quantity == 1


def test_get_returns_none_for_unknown_id(ledger: Ledger) -> None:
    assert ledger.get("alloc-doesnotexist0000") is None


def test_record_round_trips_every_field(ledger: Ledger) -> None:
    allocation = full_allocation()
    unset = [name for name, value in allocation if value is None or value == []]
    assert unset == []  # the fixture must exercise every field

    assert ledger.insert(allocation) is True
    assert ledger.get(allocation.allocation_id) == allocation


def test_save_updates_state_and_timestamp(ledger: Ledger) -> None:
    allocation = make_allocation()
    ledger.insert(allocation)
    before = allocation.updated_at

    allocation.state = AllocationState.RUNNING
    ledger.save(allocation)

    stored = ledger.get(allocation.allocation_id)
    assert stored is not None
    assert stored.state is AllocationState.RUNNING
    assert stored.updated_at > before


def test_save_never_creates_record(ledger: Ledger) -> None:
    with pytest.raises(AwsUnavailable) as raised:
        ledger.save(make_allocation("alloc-neverinserted00"))
    assert raised.value.code == "ConditionalCheckFailedException"


def test_item_has_top_level_query_attributes(
    ledger: Ledger, settings: Settings
) -> None:
    allocation = full_allocation()
    ledger.insert(allocation)

    item: dict[str, Any] = ledger.dynamodb.get_item(
        TableName=settings.allocations_table,
        Key={"allocation_id": {"S": allocation.allocation_id}},
    )["Item"]
    assert item["state"] == {"S": "failed"}
    assert item["requester_id"] == {"S": "U0123ABCD"}
    assert item["created_at"] == {"S": allocation.created_at.isoformat()}


def test_insert_creates_missing_table(aws: None, settings: Settings) -> None:
    """A request that arrives before the start-up check still gets recorded."""
    ledger = Ledger(settings)

    inserted = ledger.insert(make_allocation())

    assert inserted is True
    assert ledger.get("alloc-0000000000000001") is not None


def test_get_without_table_reports_missing_table(aws: None, settings: Settings) -> None:
    ledger = Ledger(settings.model_copy(update={"create_table": False}))

    with pytest.raises(AwsUnavailable) as raised:
        ledger.get("alloc-0000000000000001")

    assert settings.allocations_table in raised.value.message
