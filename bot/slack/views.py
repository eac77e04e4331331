"""The allocation modal: building the form and handling its submission.

Invalid values get a `response_action: errors` response, keyed by the
input block's block_id, so Slack keeps the modal open and shows each message
under its field. A valid submission runs the same path as the command.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Executor
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.errors import AllocationError, InvalidRequest
from bot.policy import PURPOSE_MAX_LENGTH
from bot.runtime import Runtime
from bot.slack import messages
from bot.slack.allocate import PendingAllocation, run_allocation

logger = logging.getLogger(__name__)

CALLBACK_ID = "allocate_modal"
TYPE_BLOCK = "instance_type"
COUNT_BLOCK = "count"
PURPOSE_BLOCK = "purpose"
DESTINATION_BLOCK = "destination"
ACTION_ID = "value"

# Slack's limits for a static_select: 100 options and 100 groups.
MAX_OPTIONS = 100


def register(app: App, runtime: Runtime, executor: Executor) -> None:
    def acknowledge(
        ack: Ack,
        body: dict[str, Any],
        context: BoltContext,
        client: WebClient,
        respond: Respond,
    ) -> None:
        pending = acknowledge_submission(runtime, ack, body)
        if pending is None:
            return
        user = body.get("user") or {}
        executor.submit(
            run_allocation,
            runtime,
            client,
            user.get("id", ""),
            (body.get("team") or {}).get("id"),
            pending,
            respond if context.get("response_url") else None,
            getattr(executor, "follow", None),
        )

    app.view_submission(CALLBACK_ID)(acknowledge)


def build_modal(runtime: Runtime, channel_id: str | None) -> dict[str, Any]:
    """Return the modal view; labels use only instance types already cached."""
    policy = runtime.service.policy
    metadata = json.dumps({"channel_id": channel_id})
    destination: dict[str, Any] = {
        "type": "conversations_select",
        "action_id": ACTION_ID,
        "default_to_current_conversation": True,
        "response_url_enabled": True,
        "filter": {
            "include": ["public", "private", "im", "mpim"],
            "exclude_bot_users": True,
        },
    }
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": messages.MODAL_TITLE},
        "submit": {"type": "plain_text", "text": messages.MODAL_SUBMIT},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": TYPE_BLOCK,
                "label": {"type": "plain_text", "text": messages.LABEL_INSTANCE_TYPE},
                "element": {
                    "type": "static_select",
                    "action_id": ACTION_ID,
                    "placeholder": {
                        "type": "plain_text",
                        "text": messages.PLACEHOLDER_INSTANCE_TYPE,
                    },
                    "option_groups": instance_type_groups(runtime),
                },
            },
            {
                "type": "input",
                "block_id": COUNT_BLOCK,
                "label": {"type": "plain_text", "text": messages.LABEL_COUNT},
                "hint": {
                    "type": "plain_text",
                    "text": messages.count_hint(policy.max_instances),
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": ACTION_ID,
                    "initial_value": "1",
                },
            },
            {
                "type": "input",
                "block_id": PURPOSE_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": messages.LABEL_PURPOSE},
                "element": {
                    "type": "plain_text_input",
                    "action_id": ACTION_ID,
                    "multiline": True,
                    "max_length": PURPOSE_MAX_LENGTH,
                    "placeholder": {
                        "type": "plain_text",
                        "text": messages.PURPOSE_PLACEHOLDER,
                    },
                },
            },
            {
                "type": "input",
                "block_id": DESTINATION_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": messages.LABEL_DESTINATION},
                "element": destination,
            },
        ],
    }


def instance_type_groups(runtime: Runtime) -> list[dict[str, Any]]:
    """Group the allowed instance types by family, labelled with vCPUs and memory."""
    allowed = runtime.service.policy.allowed_instance_types
    if len(allowed) > MAX_OPTIONS:
        logger.warning(
            "%d instance types are allowed; the form lists the first %d",
            len(allowed),
            MAX_OPTIONS,
        )
    known = runtime.service.provisioner.cached_instance_types()
    groups: dict[str, list[dict[str, Any]]] = {}
    for name in allowed[:MAX_OPTIONS]:
        family = name.split(".", 1)[0]
        label = messages.option_label(name, known.get(name))
        option = {"text": {"type": "plain_text", "text": label}, "value": name}
        groups.setdefault(family, []).append(option)
    return [
        {"label": {"type": "plain_text", "text": family}, "options": options}
        for family, options in groups.items()
    ]


def acknowledge_submission(
    runtime: Runtime, ack: Ack, body: dict[str, Any]
) -> PendingAllocation | None:
    """Close the modal and return the request, or keep it open with field errors."""
    view = body.get("view") or {}
    if not view.get("id") or not (body.get("user") or {}).get("id"):
        # Slack always sends both; without the view ID there is no
        # idempotency key, so such a submission is not run.
        logger.warning("View submission without view ID or user ID ignored")
        ack()
        return None
    try:
        pending = read_submission(runtime, view)
    except FieldErrors as errors:
        ack(response_action="errors", errors=errors.by_block)
        return None
    ack()
    return pending


class FieldErrors(Exception):
    """Messages to show under the modal's fields, keyed by block_id."""

    def __init__(self, by_block: dict[str, str]):
        super().__init__(", ".join(by_block))
        self.by_block = by_block


def read_submission(runtime: Runtime, view: dict[str, Any]) -> PendingAllocation:
    """Return the checked request from a submitted view, or raise FieldErrors."""
    policy = runtime.service.policy
    values = (view.get("state") or {}).get("values") or {}
    errors: dict[str, str] = {}

    instance_type = ""
    selected = _value(values, TYPE_BLOCK).get("selected_option") or {}
    if not selected.get("value"):
        errors[TYPE_BLOCK] = messages.choose_instance_type()
    else:
        try:
            instance_type = policy.check_instance_type(selected["value"])
        except AllocationError as error:
            errors[TYPE_BLOCK] = _field_message(error)

    quantity = 0
    try:
        quantity = policy.parse_count(_value(values, COUNT_BLOCK).get("value") or "")
    except AllocationError as error:
        errors[COUNT_BLOCK] = _field_message(error)

    purpose = None
    try:
        purpose = policy.check_purpose(_value(values, PURPOSE_BLOCK).get("value"))
    except AllocationError as error:
        errors[PURPOSE_BLOCK] = _field_message(error)

    if errors:
        raise FieldErrors(errors)
    return PendingAllocation(
        instance_type=instance_type,
        quantity=quantity,
        idempotency_key="slack:view:" + str(view["id"]),
        channel_id=_destination(values, view),
        purpose=purpose,
    )


def _value(values: dict[str, Any], block_id: str) -> dict[str, Any]:
    return (values.get(block_id) or {}).get(ACTION_ID) or {}


def _destination(values: dict[str, Any], view: dict[str, Any]) -> str | None:
    selected = _value(values, DESTINATION_BLOCK).get("selected_conversation")
    if selected:
        return str(selected)
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return None
    channel = metadata.get("channel_id") if isinstance(metadata, dict) else None
    return str(channel) if channel else None


def _field_message(error: AllocationError) -> str:
    if isinstance(error, InvalidRequest):
        text = "; ".join(error.fields.values())
        return text[:1].upper() + text[1:] + "."
    return error.message + "."
