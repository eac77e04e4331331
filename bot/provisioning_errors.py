"""Translation of AWS errors into messages that state what failed and what to try."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from bot.errors import AllocationError, AwsRejected, AwsUnavailable, InvalidRequest

QUOTA_HINT = (
    "Ask for fewer or smaller instances, or raise the quota: Service Quotas console, "
    "Amazon EC2, 'Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances'"
)
PERMISSION_HINT = "Ask the operator to grant the bot's IAM role this EC2 permission"
THROTTLE_HINT = "AWS is throttling requests from this account; try again in a minute"


def translate_client_error(
    error: ClientError, context: dict[str, Any] | None = None
) -> AllocationError:
    """Return the product error for an AWS ClientError.

    `context` may hold instance_type, quantity and zone, which make the
    message specific ("no capacity for 4 × m5.8xlarge in us-east-1a").
    """
    context = context or {}
    details = error.response.get("Error", {})
    code = details.get("Code", "Unknown")
    aws_message = details.get("Message", "")
    shape = _shape(context)
    where = f" in {context['zone']}" if context.get("zone") else ""

    if code == "InsufficientInstanceCapacity":
        return AwsUnavailable(
            code,
            f"AWS has no capacity for {shape}{where} right now",
            hint="Try another Availability Zone, another instance type, fewer "
            "instances, or try again later",
            http_status=503,
        )
    if code in (
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
    ):
        return AwsRejected(
            code,
            f"{shape} would exceed this account's EC2 limit: {aws_message}",
            hint=QUOTA_HINT,
        )
    if code == "Unsupported":
        return AwsRejected(
            code,
            f"{shape} is not supported{where}: {aws_message}",
            hint="Choose another instance type or zone",
        )
    if code == "InvalidInstanceType":
        name = context.get("instance_type") or "the instance type"
        return InvalidRequest(
            {"instance_type": f"{name} does not exist: {aws_message}"}
        )
    if code in (
        "UnauthorizedOperation",
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
    ):
        # The encoded authorization message is long and only useful to the operator.
        return AwsRejected(
            code,
            "AWS denied the bot permission for this request",
            hint=PERMISSION_HINT,
            http_status=403,
        )
    if code in ("RequestLimitExceeded", "ThrottlingException", "Throttling"):
        return AwsUnavailable(
            code,
            "AWS throttled the request after retries",
            hint=THROTTLE_HINT,
            http_status=503,
        )
    if code in (
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    ):
        return AwsUnavailable(
            code,
            f"AWS failed on its side ({code})",
            hint="Try again in a minute",
            http_status=502,
        )
    if code.startswith("Invalid") or code.startswith("Missing"):
        return AwsRejected(code, f"AWS rejected the request: {aws_message}")
    return AwsUnavailable(
        code, f"AWS returned {code}: {aws_message}", hint="Try again later"
    )


def unreachable(error: BotoCoreError) -> AwsUnavailable:
    """Return the error for a failure to reach AWS: network, timeout, credentials."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return AwsUnavailable(
            "NoCredentials",
            "The bot has no AWS credentials",
            hint="Tell the bot's operator: give it an IAM role or set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            http_status=503,
        )
    return AwsUnavailable(
        type(error).__name__,
        "Could not reach AWS",
        hint="Try again in a minute; if it persists, tell the bot's operator",
        http_status=502,
    )


def _shape(context: dict[str, Any]) -> str:
    instance_type = context.get("instance_type")
    quantity = context.get("quantity")
    if instance_type and quantity:
        return f"{quantity} × {instance_type}"
    return instance_type or "this request"
