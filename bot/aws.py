"""boto3 clients built from Settings, with bounded retries that are logged."""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config

from bot.config import Settings

logger = logging.getLogger(__name__)

# botocore's "standard" mode retries throttling (RequestLimitExceeded) and
# transient errors with exponential backoff and jitter. It resends the same
# parameters, so every retry of one RunInstances carries the same ClientToken.
RETRY_ATTEMPTS = 5


def make_client(service: str, settings: Settings) -> Any:
    """Create a boto3 client for `service` in the configured region and endpoint."""
    config = Config(
        retries={"mode": "standard", "max_attempts": RETRY_ATTEMPTS},
        connect_timeout=5,
        read_timeout=30,
        user_agent_extra=f"app/{settings.app_tag}",
    )
    client = boto3.session.Session().client(
        service,
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        config=config,
    )
    client.meta.events.register(f"needs-retry.{service}", _log_retry)
    return client


# Error codes botocore's standard mode treats as throttling or transient.
RETRYABLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
    }
)


def _log_retry(
    attempts: int = 0,
    response: Any = None,
    caught_exception: Exception | None = None,
    operation: Any = None,
    **_: Any,
) -> None:
    """Log each failed attempt that botocore's retry handler may repeat."""
    name = getattr(operation, "name", "?")
    if caught_exception is not None:
        reason = type(caught_exception).__name__
    elif response is not None:
        http_response, parsed = response
        status = getattr(http_response, "status_code", 200)
        code = (parsed or {}).get("Error", {}).get("Code")
        if code not in RETRYABLE_CODES and status < 500:
            return
        reason = f"{code or 'no code'} (HTTP {status})"
    else:
        return
    if attempts < RETRY_ATTEMPTS:
        logger.warning(
            "AWS %s attempt %d failed with %s; retrying", name, attempts, reason
        )
    else:
        logger.error("AWS %s failed with %s after %d attempts", name, reason, attempts)
