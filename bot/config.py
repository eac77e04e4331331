"""Settings read once from the environment; explicit arguments win over it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SLACK_API_URL = "https://slack.com/api/"

# Types a requester may choose unless ALLOWED_INSTANCE_TYPES is set:
# burstable, general purpose, compute and memory optimized, x86_64 and arm64.
DEFAULT_ALLOWED_INSTANCE_TYPES = (
    "t3.micro,t3.small,t3.medium,t3.large,t3.xlarge,t3.2xlarge,"
    "t4g.micro,t4g.small,t4g.medium,t4g.large,t4g.xlarge,t4g.2xlarge,"
    "m5.large,m5.xlarge,m5.2xlarge,m5.4xlarge,m5.8xlarge,"
    "m7g.large,m7g.xlarge,m7g.2xlarge,m7g.4xlarge,"
    "c5.large,c5.xlarge,c5.2xlarge,c5.4xlarge,"
    "r5.large,r5.xlarge,r5.2xlarge,r5.4xlarge"
)

CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Every setting of the bot, the JSON API and the Lambda handler."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True
    )

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL

    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "aws_region"),
    )
    aws_endpoint_url: str | None = None

    allocations_table: str = "ec2-allocations"
    create_table: bool = Field(
        default=True,
        validation_alias=AliasChoices("ALLOCATIONS_TABLE_CREATE", "create_table"),
    )

    api_token: SecretStr | None = None
    port: int = Field(default=3000, ge=1, le=65535)

    allowed_instance_types: CommaList = DEFAULT_ALLOWED_INSTANCE_TYPES
    max_instances: int = Field(
        default=10,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("MAX_INSTANCES_PER_ALLOCATION", "max_instances"),
    )

    ami_id: str | None = None
    launch_template: str | None = None  # a launch template ID (lt-...) or name
    subnet_ids: CommaList = ()
    security_group_ids: CommaList = ()
    key_name: str | None = None
    app_tag: str = Field(
        default="ec2-allocator", validation_alias=AliasChoices("APP_TAG", "app_tag")
    )

    status_poll_seconds: float = Field(default=5.0, gt=0)
    status_timeout_seconds: float = Field(default=600.0, gt=0)
    log_level: str = "INFO"

    @field_validator(
        "allowed_instance_types", "subnet_ids", "security_group_ids", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_instance_types")
    @classmethod
    def _lower_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.lower() for name in value))

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("aws_endpoint_url", "ami_id", "launch_template", "key_name")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None
