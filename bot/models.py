"""Domain records shared by every layer: requests, allocations and instances."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Family, optional generation and attribute letters, a dot, then the size:
# "t3.2xlarge", "m7gd.metal-24xl", "u-6tb1.metal", "mac2-m2.metal".
INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,24}\.[a-z0-9-]{1,24}$")


# C0 and C1 control characters and DEL, except tab and line feed.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def has_control_characters(text: str) -> bool:
    """Return whether `text` contains a control character other than tab or newline.

    Such characters can rewrite a terminal, break EC2's XML responses when
    they reach a tag, and have no place in a name or a purpose.
    """
    return CONTROL_CHARACTERS.search(text) is not None


def shorten(text: str, limit: int = 40) -> str:
    """Return `text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def utc_now() -> datetime:
    return datetime.now(UTC)


def normalize_instance_type(value: str) -> str:
    """Return the instance type in the lower case EC2 uses, or raise ValueError."""
    name = value.strip().lower()
    if not INSTANCE_TYPE_PATTERN.fullmatch(name):
        shown = CONTROL_CHARACTERS.sub("?", shorten(value.strip()))
        raise ValueError(
            f"'{shown}' is not an instance type name; "
            "use a name such as t3.micro or m5.large"
        )
    return name


class AllocationState(StrEnum):
    """Life cycle of an allocation as the ledger records it."""

    REQUESTED = "requested"  # recorded, nothing launched yet
    PENDING = "pending"  # RunInstances succeeded, instances are starting
    RUNNING = "running"  # every instance reached `running`
    FAILED = "failed"  # the launch was rejected or an instance stopped on the way up

    @property
    def is_final(self) -> bool:
        return self in (AllocationState.RUNNING, AllocationState.FAILED)


class Requester(BaseModel):
    """The person or system that asked for an allocation."""

    model_config = ConfigDict(frozen=True)

    source: Literal["slack", "api"]
    user_id: str | None = None  # Slack user ID; None for the JSON API
    team_id: str | None = None
    name: str | None = None
    email: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.user_id or "unknown"


class SlackDestination(BaseModel):
    """The conversation, and the thread in it, where the bot reports an allocation."""

    channel_id: str
    thread_ts: str | None = None  # `ts` of the first message posted for the allocation
    requested_channel_id: str | None = None  # set when the report moved to a DM


class InstanceTypeInfo(BaseModel):
    """An instance type as EC2 describes it in one region."""

    model_config = ConfigDict(frozen=True)

    name: str
    vcpus: int
    memory_mib: int
    architectures: tuple[str, ...]
    zones: tuple[str, ...] = ()  # Availability Zones that offer the type

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


class Image(BaseModel):
    """The AMI chosen for a launch, with where it came from."""

    model_config = ConfigDict(frozen=True)

    image_id: str
    architecture: str
    source: str  # an SSM parameter name, "AMI_ID" or "launch template"


class LaunchPlan(BaseModel):
    """Everything resolved before RunInstances: type, AMI and placement."""

    model_config = ConfigDict(frozen=True)

    instance_type: InstanceTypeInfo
    image: Image | None  # None when a launch template supplies the AMI
    availability_zone: str | None
    subnet_id: str | None = None
    # Further (subnet, zone) pairs that offer the type, tried in order when
    # EC2 has no capacity in the first.
    fallbacks: tuple[tuple[str | None, str], ...] = ()


class Instance(BaseModel):
    """One EC2 instance of an allocation, as last described."""

    instance_id: str
    state: str
    availability_zone: str | None = None
    private_ip: str | None = None
    public_ip: str | None = None
    public_dns: str | None = None
    state_reason: str | None = None  # EC2's StateReason message when it stopped


class Failure(BaseModel):
    """The reason an allocation failed, in words for the requester."""

    code: str  # the AWS error code or one of this product's codes
    message: str
    hint: str | None = None
    http_status: int | None = None  # the status the JSON API returns for it


class AllocationRequest(BaseModel):
    """A validated request to launch `quantity` instances of one type."""

    model_config = ConfigDict(frozen=True)

    instance_type: str
    quantity: int = Field(default=1, ge=1)
    purpose: str | None = Field(default=None, max_length=500)
    requester: Requester
    report_to: SlackDestination | None = None

    @field_validator("instance_type", mode="before")
    @classmethod
    def _normalize_type(cls, value: object) -> object:
        if isinstance(value, str):
            return normalize_instance_type(value)
        return value

    @field_validator("purpose", mode="before")
    @classmethod
    def _check_purpose(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if has_control_characters(value):
            raise ValueError("must not contain control characters")
        return value.strip() or None


class Allocation(BaseModel):
    """The ledger's record of one allocation."""

    allocation_id: str
    state: AllocationState
    instance_type: str
    quantity: int
    purpose: str | None = None
    requester: Requester
    report_to: SlackDestination | None = None
    region: str
    availability_zone: str | None = None
    image_id: str | None = None
    architecture: str | None = None
    instances: list[Instance] = Field(default_factory=list)
    failure: Failure | None = None
    request_fingerprint: str | None = None  # hash of the request, to spot key reuse
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    # Reserved for leases and release: when the allocation should end.
    expires_at: datetime | None = None
