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
        table is missing and ALLOCATIONS_TABLE_CREATE is off.
        """
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
            )
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
            # Another replica starting at the same moment may have won the race.
            if _code(error) == "ResourceInUseException":
                return False
            raise _unavailable(error, "create the table") from error
        self.dynamodb.get_waiter("table_exists").wait(
            TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        logger.info("Created DynamoDB table %s", self.table_name)
        return True

    def insert(self, allocation: Allocation) -> bool:
        """Store a new record; return False if one with that ID already exists."""
        try:
            self.dynamodb.put_item(
                TableName=self.table_name,
                Item=to_item(allocation),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise _unavailable(error, "record the allocation") from error
        return True

    def save(self, allocation: Allocation) -> Allocation:
        """Overwrite an existing record with `allocation`, stamping updated_at."""
        allocation.updated_at = utc_now()
        try:
            self.dynamodb.put_item(
                TableName=self.table_name,
                Item=to_item(allocation),
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
            )
        except ClientError as error:
            raise _unavailable(error, "update the allocation") from error
        return allocation

    def save_if_unchanged(self, allocation: Allocation, previous: datetime) -> bool:
        """Save `allocation` only if nobody saved it since `previous`.

        Returns False when the stored record's updated_at differs, so of two
        processes that read the same record, only one wins the write.
        """
        allocation.updated_at = utc_now()
        try:
            self.dynamodb.put_item(
                TableName=self.table_name,
                Item=to_item(allocation),
                ConditionExpression="#updated = :previous",
                ExpressionAttributeNames={"#updated": "updated_at"},
                ExpressionAttributeValues={":previous": {"S": previous.isoformat()}},
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise _unavailable(error, "update the allocation") from error
        return True

    def get(self, allocation_id: str) -> Allocation | None:
        try:
            response = self.dynamodb.get_item(
                TableName=self.table_name,
                Key={PARTITION_KEY: {"S": allocation_id}},
                ConsistentRead=True,
            )
        except ClientError as error:
            raise _unavailable(error, "read the allocation") from error
        item = response.get("Item")
        if item is None:
            return None
        return Allocation.model_validate_json(item["record"]["S"])


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


def _unavailable(error: ClientError, action: str) -> AwsUnavailable:
    code = _code(error)
    return AwsUnavailable(
        code,
        f"Could not {action} in DynamoDB ({code})",
        hint="Try again in a minute; if it persists, tell the bot's operator",
        http_status=503,
    )
