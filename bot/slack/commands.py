"""The /allocate slash command.

The acknowledgement parses and checks the text without touching AWS, replies
at once, and submits the checked request to the executor, which allocates
after the response has gone. With no text, it opens the modal while the
trigger_id is still valid.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.errors import AllocationError, InvalidRequest
from bot.runtime import Runtime
from bot.slack import messages
from bot.slack.allocate import PendingAllocation, run_allocation
from bot.slack.views import build_modal

logger = logging.getLogger(__name__)

COMMAND = "/allocate"
HELP_WORDS = frozenset({"help", "-h", "--help", "?"})


def register(app: App, runtime: Runtime, executor: Executor) -> None:
    def acknowledge(
        ack: Ack, command: dict[str, Any], client: WebClient, respond: Respond
    ) -> None:
        pending = acknowledge_command(runtime, ack, command, client)
        if pending is None:
            return
        executor.submit(
            run_allocation,
            runtime,
            client,
            command["user_id"],
            command.get("team_id"),
            pending,
            respond,
            getattr(executor, "follow", None),
        )

    app.command(COMMAND)(acknowledge)


def acknowledge_command(
    runtime: Runtime, ack: Ack, command: dict[str, Any], client: WebClient
) -> PendingAllocation | None:
    """Acknowledge within Slack's 3 seconds; return the checked request, if any."""
    name = command.get("command") or COMMAND
    text = (command.get("text") or "").strip()
    policy = runtime.service.policy
    if not command.get("user_id") or not command.get("trigger_id"):
        # Slack always sends both; without the trigger_id there is no
        # idempotency key, so such a request is not run.
        logger.warning("Slash command without user_id or trigger_id ignored")
        ack(text=messages.incomplete_request())
        return None
    if not text:
        ack(**_open_modal(runtime, client, command, name))
        return None
    if text.lower() in HELP_WORDS:
        ack(text=messages.usage(name, policy.max_instances))
        return None
    try:
        instance_type, quantity = parse_command_text(text, runtime)
    except AllocationError as error:
        ack(text=messages.invalid_command(error, name, policy.max_instances))
        return None
    ack(text=messages.accepted(instance_type, quantity))
    return PendingAllocation(
        instance_type=instance_type,
        quantity=quantity,
        idempotency_key="slack:command:" + command["trigger_id"],
        channel_id=command.get("channel_id"),
    )


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
