"""The /allocate slash command.

The acknowledgement parses and checks the text without touching AWS, answers
at once, and hands the checked request to a lazy listener that allocates.
With no text, it opens the modal while the trigger_id is still valid.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.errors import AllocationError, InvalidRequest
from bot.runtime import Runtime
from bot.slack import messages
from bot.slack.allocate import CONTEXT_KEY, PendingAllocation, run_allocation
from bot.slack.views import build_modal

logger = logging.getLogger(__name__)

COMMAND = "/allocate"
HELP_WORDS = frozenset({"help", "-h", "--help", "?"})


def register(app: App, runtime: Runtime) -> None:
    def acknowledge(
        ack: Ack, command: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        acknowledge_command(runtime, ack, command, context, client)

    def allocate(
        command: dict[str, Any],
        context: BoltContext,
        client: WebClient,
        respond: Respond,
    ) -> None:
        pending = context.get(CONTEXT_KEY)
        if pending is None:
            return
        run_allocation(
            runtime,
            client,
            command["user_id"],
            command.get("team_id"),
            pending,
            respond,
        )

    app.command(COMMAND)(ack=acknowledge, lazy=[allocate])


def acknowledge_command(
    runtime: Runtime,
    ack: Ack,
    command: dict[str, Any],
    context: BoltContext,
    client: WebClient,
) -> None:
    """Answer within Slack's 3 seconds; store a checked request for the lazy step."""
    name = command.get("command") or COMMAND
    text = (command.get("text") or "").strip()
    policy = runtime.service.policy
    if not text:
        ack(**_open_modal(runtime, client, command, name))
        return
    if text.lower() in HELP_WORDS:
        ack(text=messages.usage(name, policy.max_instances))
        return
    try:
        instance_type, quantity = parse_command_text(text, runtime)
    except AllocationError as error:
        ack(text=messages.invalid_command(error, name, policy.max_instances))
        return
    context[CONTEXT_KEY] = PendingAllocation(
        instance_type=instance_type,
        quantity=quantity,
        idempotency_key="slack:command:" + (command.get("trigger_id") or ""),
        channel_id=command.get("channel_id"),
    )
    ack(text=messages.accepted(instance_type, quantity))


def parse_command_text(text: str, runtime: Runtime) -> tuple[str, int]:
    """Return (instance type, count) from `TYPE [COUNT]`, or raise InvalidRequest."""
    policy = runtime.service.policy
    words = text.split()
    instance_type = policy.check_instance_type(words[0])
    quantity = policy.parse_count(words[1]) if len(words) > 1 else 1
    if len(words) > 2:
        extra = " ".join(words[2:])[:40]
        raise InvalidRequest(
            {"text": f"has unexpected words after the count: '{extra}'"}
        )
    return instance_type, quantity


def _open_modal(
    runtime: Runtime, client: WebClient, command: dict[str, Any], name: str
) -> dict[str, Any]:
    """Open the form; return the acknowledgement's arguments."""
    view = build_modal(runtime, channel_id=command.get("channel_id"))
    try:
        client.views_open(trigger_id=command.get("trigger_id"), view=view)
    except SlackApiError as error:
        code = str(error.response.get("error", "unknown_error"))
        logger.warning("views.open failed: %s", code)
        if code == "expired_trigger_id":
            return {"text": messages.modal_expired(name)}
        return {"text": messages.modal_failed(name, code)}
    except SlackClientError as error:
        logger.warning("views.open failed: %s", type(error).__name__)
        return {"text": messages.modal_failed(name, type(error).__name__)}
    return {}
