"""boto3 clients built from Settings, with bounded retries that are logged."""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config

from bot.config import Settings

logger = logging.getLogger(__name__)

# botocore's "standard" mode retries throttling (RequestLimitExceeded) and
# transient errors with exponential backoff and jitter. It resends the same
# parameters, so every retry of one RunInstances carries the same ClientToken.
# RETRY_ATTEMPTS counts every attempt of one call, the first included. botocore
# reads the "max_attempts" option as retries after the first attempt, so the
# config sets "total_max_attempts".
RETRY_ATTEMPTS = 5


_session: boto3.session.Session | None = None
# A boto3 session is not thread-safe; clients made from it are.
_session_lock = threading.Lock()


def _shared_session() -> boto3.session.Session:
    """Return the process's session, which keeps parsed service models.

    Parsing the EC2 model takes a few hundred milliseconds, so a session per
    client would pay it for every client.
    """
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def make_client(service: str, settings: Settings) -> Any:
    """Create a boto3 client for `service` in the configured region and endpoint."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": RETRY_ATTEMPTS},
        connect_timeout=5,
        read_timeout=30,
        user_agent_extra=f"app/{settings.app_tag}",
    )
    with _session_lock:
        client = _shared_session().client(
            service,
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=config,
        )
    client.meta.events.register_first(f"needs-retry.{service}", _veto_capacity_retry)
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


# The EC2 API reference lists these as server errors, which come with HTTP 500,
# and botocore's standard mode retries every 500 as transient. Repeating the
# same launch in the same zone seconds later rarely finds capacity, so the
# error reaches the requester at once, who can choose another zone, type or time.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientAddressCapacity",
        "InsufficientCapacity",
        "InsufficientReservedInstanceCapacity",
    }
)


def _veto_capacity_retry(response: Any = None, **_: Any) -> bool | None:
    """Stop botocore from retrying a capacity error.

    It is registered ahead of botocore's retry handler. Endpoint._needs_retry
    takes the first handler result that is not None, and in botocore 1.44 a
    result of False means no retry.
    """
    if response is None:
        return None
    _, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code")
    return False if code in CAPACITY_CODES else None


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
        if code in CAPACITY_CODES:
            return
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
