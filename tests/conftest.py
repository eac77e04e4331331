"""Fixtures shared by every test: fake AWS credentials, moto, settings, service."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from moto import mock_aws
from moto.dynamodb.models.table import Table

from bot.allocations import AllocationService
from bot.config import Settings

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point boto3 at fake credentials so no test can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    """Run the test against moto's in-process EC2, SSM and DynamoDB."""
    make_conditional_puts_atomic(monkeypatch)
    with mock_aws():
        yield


def make_conditional_puts_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's conditional PutItem atomic across threads, as DynamoDB's is.

    moto 5.2.5 reads the current item, evaluates the condition and stores the
    new item in separate steps without a lock, so two threads can both pass
    `attribute_not_exists`. Real DynamoDB evaluates the condition atomically.
    """
    lock = threading.Lock()
    original = Table.put_item

    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(Table, "put_item", put_item)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        aws_region=REGION,
        status_poll_seconds=0.01,
        status_timeout_seconds=5,
        api_token="test-api-token",
        slack_bot_token="xoxb-test-token",
        slack_signing_secret="test-signing-secret",
    )


@pytest.fixture
def service(aws, settings: Settings) -> AllocationService:
    """An AllocationService on moto with its table created."""
    service = AllocationService(settings)
    service.ledger.ensure_table()
    return service
