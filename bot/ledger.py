"""The allocation ledger: one DynamoDB item per allocation.

Each item keeps the whole record as JSON in `record`, beside the attributes
that later queries need at the top level (state, requester, creation time).
A conditional put on the partition key is what makes a repeated request
return the first allocation instead of launching again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from bot.aws import make_client
from bot.config import Settings
from bot.errors import AwsUnavailable
from bot.models import Allocation, utc_now

logger = logging.getLogger(__name__)

PARTITION_KEY = "allocation_id"


class Ledger:
    """Reads and writes allocation records in the ALLOCATIONS_TABLE table."""

    def __init__(self, settings: Settings, dynamodb: Any = None):
        self.settings = settings
        self.table_name = settings.allocations_table
        self._dynamodb = dynamodb
        self._lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._table_ready = False

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            with self._lock:
                if self._dynamodb is None:
                    self._dynamodb = make_client("dynamodb", self.settings)
        return self._dynamodb

    def ensure_table(self) -> bool:
        """Create the table when it is missing and creation is enabled.

        Returns True when this call created it. Raises AwsUnavailable when the
        table is missing and ALLOCATIONS_TABLE_CREATE is off. Safe to call
        from several threads and processes at once.
        """
        with self._table_lock:
            if self._table_ready:
                return False
            created = self._create_table_if_missing()
            self._table_ready = True
            return created

    def _create_table_if_missing(self) -> bool:
        try:
            self.dynamodb.describe_table(TableName=self.table_name)
            return False
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise _unavailable(error, "check the table") from error
        if not self.settings.create_table:
            raise AwsUnavailable(
                "ResourceNotFoundException",
                f"DynamoDB table {self.table_name} does not exist",
                hint="Create it (partition key allocation_id, type S) or set "
                "ALLOCATIONS_TABLE_CREATE=true",
                http_status=503,
            )
        created = True
        try:
            self.dynamodb.create_table(
                TableName=self.table_name,
                AttributeDefinitions=[
                    {"AttributeName": PARTITION_KEY, "AttributeType": "S"}
                ],
                KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as error:
            # Another process starting at the same moment may have created it.
            if _code(error) != "ResourceInUseException":
                raise _unavailable(error, "create the table") from error
            created = False
        self.dynamodb.get_waiter("table_exists").wait(
            TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        if created:
            logger.info("Created DynamoDB table %s", self.table_name)
        return created

    def insert(self, allocation: Allocation) -> bool:
        """Store a new record; return False if one with that ID already exists."""
        response = self._write(
            "record the allocation",
            to_item(allocation),
            ConditionExpression="attribute_not_exists(#pk)",
            ExpressionAttributeNames={"#pk": PARTITION_KEY},
        )
        return response is not None

    def save(self, allocation: Allocation) -> Allocation:
        """Overwrite an existing record with `allocation`, stamping updated_at."""
        allocation.updated_at = utc_now()
        response = self._write(
            "update the allocation",
            to_item(allocation),
            ConditionExpression="attribute_exists(#pk)",
            ExpressionAttributeNames={"#pk": PARTITION_KEY},
        )
        if response is None:
            raise AwsUnavailable(
                "ConditionalCheckFailedException",
                f"Allocation {allocation.allocation_id} is missing from the ledger",
                hint="Tell the bot's operator; the table may have been replaced",
                http_status=503,
            )
        return allocation

    def save_if_unchanged(self, allocation: Allocation, previous: datetime) -> bool:
        """Save `allocation` only if no one has saved it since `previous`.

        Returns False when the stored record's updated_at differs, so of two
        processes that read the same record, only one wins the write.
        """
        allocation.updated_at = utc_now()
        response = self._write(
            "update the allocation",
            to_item(allocation),
            ConditionExpression="#updated = :previous",
            ExpressionAttributeNames={"#updated": "updated_at"},
            ExpressionAttributeValues={":previous": {"S": previous.isoformat()}},
        )
        return response is not None

    def get(self, allocation_id: str) -> Allocation | None:
        response = self._call(
            "read the allocation",
            self.dynamodb.get_item,
            Key={PARTITION_KEY: {"S": allocation_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None:
            return None
        return Allocation.model_validate_json(item["record"]["S"])

    def _write(self, action: str, item: dict[str, Any], **params: Any) -> Any:
        """Put `item` under a condition; return None when the condition fails."""
        try:
            return self._call(action, self.dynamodb.put_item, Item=item, **params)
        except ConditionFailed:
            return None

    def _call(self, action: str, operation: Any, **params: Any) -> Any:
        """Run a table operation, creating the table once if it is missing.

        The first request may arrive before the start-up check has created
        the table, so a missing table is created here too rather than failing.
        """
        try:
            return operation(TableName=self.table_name, **params)
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise _translate(error, action) from error
        logger.warning("DynamoDB table %s is missing; creating it", self.table_name)
        self._table_ready = False
        self.ensure_table()
        try:
            return operation(TableName=self.table_name, **params)
        except ClientError as error:
            raise _translate(error, action) from error


class ConditionFailed(Exception):
    """A conditional write found the record in another state than required."""


def to_item(allocation: Allocation) -> dict[str, Any]:
    item: dict[str, Any] = {
        PARTITION_KEY: {"S": allocation.allocation_id},
        "state": {"S": allocation.state.value},
        "created_at": {"S": allocation.created_at.isoformat()},
        "updated_at": {"S": allocation.updated_at.isoformat()},
        "record": {"S": allocation.model_dump_json()},
    }
    if allocation.requester.user_id:
        item["requester_id"] = {"S": allocation.requester.user_id}
    return item


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "Unknown")


def _translate(error: ClientError, action: str) -> Exception:
    if _code(error) == "ConditionalCheckFailedException":
        return ConditionFailed()
    return _unavailable(error, action)


def _unavailable(error: ClientError, action: str) -> AwsUnavailable:
    code = _code(error)
    return AwsUnavailable(
        code,
        f"Could not {action} in DynamoDB ({code})",
        hint="Try again in a minute; if it persists, tell the bot's operator",
        http_status=503,
    )
