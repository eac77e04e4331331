"""The work after the acknowledgement, shared by the slash command and the modal.

It runs on the adapter's executor once the acknowledgement is sent. Bolt's
lazy listeners would do the same, but they deep-copy every request first,
which made the acknowledgement several times slower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from bot.allocations import allocation_id_for
from bot.errors import AllocationError
from bot.models import (
    Allocation,
    AllocationRequest,
    AllocationState,
    Requester,
    SlackDestination,
)
from bot.runtime import Runtime
from bot.slack import messages
from bot.slack.reporting import Respond, SlackReporter

logger = logging.getLogger(__name__)

FollowSubmitter = Callable[..., Any]


@dataclass(frozen=True)
class PendingAllocation:
    """A request that passed the checks made before the acknowledgement."""

    instance_type: str
    quantity: int
    idempotency_key: str
    channel_id: str | None  # conversation to report in; None means a DM
    purpose: str | None = None


def run_allocation(
    runtime: Runtime,
    client: WebClient,
    user_id: str,
    team_id: str | None,
    pending: PendingAllocation,
    respond: Respond | None,
    follow_with: FollowSubmitter | None = None,
) -> None:
    """Allocate and report every status to the requester, catching every error.

    With `follow_with`, following the instances to `running` is handed to
    it (another pool) once they are launched; without, it happens here.
    """
    service = runtime.service
    # The ID the allocation gets, known before it is recorded.
    reference = allocation_id_for(pending.idempotency_key)
    reporter = SlackReporter(
        client,
        user_id,
        pending.channel_id,
        respond,
        on_destination=service.set_destination,
        allocation_id=reference,
    )
    try:
        request = AllocationRequest(
            instance_type=pending.instance_type,
            quantity=pending.quantity,
            purpose=pending.purpose,
            requester=lookup_requester(client, user_id, team_id, reference),
            report_to=SlackDestination(channel_id=pending.channel_id)
            if pending.channel_id
            else None,
        )
        allocation, created = service.allocate(
            request,
            pending.idempotency_key,
            on_event=reporter,
            follow=follow_with is None,
        )
    except AllocationError as error:
        _report_error(reporter, error, pending, reference)
        return
    except Exception:
        logger.exception("Slack allocation %s failed unexpectedly", reference)
        if reporter.allocation is None:
            reporter.send_ephemeral(messages.internal_error(reference))
        else:
            reporter.report_problem(messages.internal_error_after(reporter.allocation))
        return
    if not created:
        logger.info(
            "Slack request repeated for allocation %s; already reported",
            allocation.allocation_id,
        )
    elif follow_with is not None and not allocation.state.is_final:
        try:
            follow_with(follow_allocation, runtime, allocation, reporter)
        except RuntimeError:  # the pool is shutting down with the process
            logger.warning(
                "Allocation %s: not followed, the bot is stopping",
                allocation.allocation_id,
            )
            reporter.report_problem(messages.not_followed(allocation))


def follow_allocation(
    runtime: Runtime, allocation: Allocation, reporter: SlackReporter
) -> None:
    """Follow launched instances to `running` and report, catching every error."""
    try:
        runtime.service.follow(allocation, on_event=reporter)
        if not allocation.state.is_final:  # the process is stopping
            reporter.report_problem(messages.not_followed(allocation))
    except Exception:
        logger.exception(
            "Allocation %s: following its instances failed", allocation.allocation_id
        )
        reporter.report_problem(messages.internal_error_after(allocation))


def _report_error(
    reporter: SlackReporter,
    error: AllocationError,
    pending: PendingAllocation,
    reference: str,
) -> None:
    allocation = reporter.allocation
    if allocation is None:
        logger.warning("Slack allocation %s rejected: %s", reference, error.code)
        text = messages.rejected(error, pending.instance_type, pending.quantity)
        reporter.send_ephemeral(text)
        return
    if allocation.state is AllocationState.FAILED:
        # The service emitted the `failed` event, which is already in the thread.
        logger.info("Allocation %s ended with %s", allocation.allocation_id, error.code)
        return
    logger.error(
        "Allocation %s: %s after it was recorded",
        allocation.allocation_id,
        error.code,
        exc_info=error,
    )
    reporter.report_problem(f":warning: {messages.problem(error)}")


def lookup_requester(
    client: WebClient, user_id: str, team_id: str | None, reference: str
) -> Requester:
    """Return the requester with name and email from users.info, or just the ID."""
    name = email = None
    try:
        user = client.users_info(user=user_id).get("user") or {}
    except (SlackClientError, OSError) as error:
        logger.warning(
            "Allocation %s: users.info failed for %s: %s",
            reference,
            user_id,
            type(error).__name__,
        )
    else:
        profile = user.get("profile") or {}
        name = (
            user.get("real_name")
            or profile.get("real_name")
            or profile.get("display_name")
            or user.get("name")
        )
        email = profile.get("email")
    return Requester(
        source="slack", user_id=user_id, team_id=team_id, name=name, email=email
    )
