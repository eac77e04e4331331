"""Every text and Block Kit structure the Slack bot shows to people."""

from __future__ import annotations

from typing import Any

from bot.errors import AllocationError, InvalidRequest
from bot.models import Allocation, AllocationState, Instance, InstanceTypeInfo

STATE_LABELS = {
    AllocationState.REQUESTED: ":hourglass_flowing_sand: Requested",
    AllocationState.PENDING: ":hourglass_flowing_sand: Starting",
    AllocationState.RUNNING: ":large_green_circle: Running",
    AllocationState.FAILED: ":red_circle: Failed",
}

# Slack's limit for a plain_text option label.
OPTION_LABEL_MAX = 75


def escape(text: str) -> str:
    """Escape user text so Slack shows it as typed: no mentions, no broadcasts."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def usage(command: str = "/allocate", max_instances: int = 10) -> str:
    return (
        f"*Usage:* `{command} INSTANCE_TYPE [COUNT]`, for example "
        f"`{command} t3.2xlarge 1`.\n"
        f"COUNT is a whole number from 1 to {max_instances} and defaults to 1.\n"
        f"Run `{command}` with nothing after it to choose in a form, "
        f"or `{command} help` to see this message."
    )


def invalid_command(error: AllocationError, command: str, max_instances: int) -> str:
    return f":warning: {problem(error)}\n{usage(command, max_instances)}"


def problem(error: AllocationError) -> str:
    """Return the error as one or two sentences for the requester."""
    if isinstance(error, InvalidRequest):
        parts = [f"{_field_label(name)} {text}" for name, text in error.fields.items()]
        text = "; ".join(parts)
    else:
        text = error.message
    text = escape(text)
    if error.hint:
        text += f"\n{escape(error.hint)}"
    return text


def _field_label(name: str) -> str:
    labels = {
        "quantity": "The count",
        "instance_type": "The instance type",
        "text": "The command",
    }
    return labels.get(name, name)


def accepted(instance_type: str, quantity: int) -> str:
    return f":hourglass_flowing_sand: Allocating {quantity} × `{instance_type}`…"


def modal_expired(command: str) -> str:
    return (
        ":hourglass: The form expired before it could open. "
        f"Please run `{command}` again."
    )


def modal_failed(command: str, error_code: str) -> str:
    return (
        f":warning: Could not open the form ({escape(error_code)}). "
        f"You can still type `{command} INSTANCE_TYPE [COUNT]`."
    )


def rejected(error: AllocationError, instance_type: str, quantity: int) -> str:
    return f":x: Could not allocate {quantity} × `{instance_type}`: {problem(error)}"


def incomplete_request() -> str:
    return (
        ":warning: This request arrived without the user or trigger ID that Slack "
        "always sends, so nothing was launched. Please run the command again."
    )


def internal_error(reference: str) -> str:
    return (
        ":x: Something went wrong on the bot's side and nothing was launched "
        f"for this request. Tell the bot's operator (reference `{reference}`)."
    )


def internal_error_after(allocation: Allocation) -> str:
    ids = ", ".join(f"`{i.instance_id}`" for i in allocation.instances)
    launched = f" Instances launched: {ids}." if ids else ""
    return (
        ":warning: Something went wrong on the bot's side while handling allocation "
        f"`{allocation.allocation_id}`.{launched} Check them in the EC2 console "
        "and tell the bot's operator."
    )


def not_followed(allocation: Allocation) -> str:
    return (
        ":warning: The bot is restarting and will not report when these instances "
        f"run. Check allocation `{allocation.allocation_id}` in the EC2 console."
    )


def moved_to_dm(channel_id: str) -> str:
    if channel_id.startswith("D"):
        return (
            "I cannot post in a direct message between other people, "
            "so I am reporting here."
        )
    return (
        f"I could not post in <#{channel_id}>, so I am reporting here. "
        "To get reports in that conversation, invite me with `/invite @EC2 Allocator`."
    )


# Allocation message and thread replies


def allocation_summary(allocation: Allocation) -> str:
    return (
        f"Allocation {allocation.allocation_id}: {allocation.quantity} × "
        f"{allocation.instance_type} — {allocation.state.value}"
    )


def allocation_blocks(allocation: Allocation) -> list[dict[str, Any]]:
    """Blocks of the first message, which is updated as the state changes."""
    requester = allocation.requester
    requested_by = (
        f"<@{requester.user_id}>"
        if requester.user_id
        else escape(requester.display_name)
    )
    fields = [
        f"*Allocation*\n`{allocation.allocation_id}`",
        f"*State*\n{STATE_LABELS[allocation.state]}",
        f"*Instance type*\n`{allocation.instance_type}`",
        f"*Count*\n{allocation.quantity}",
        f"*Requested by*\n{requested_by}",
        f"*Region*\n{allocation.region}",
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": text} for text in fields],
        }
    ]
    if allocation.purpose:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"*Purpose:* {escape(allocation.purpose)}",
                    }
                ],
            }
        )
    return blocks


def launched(allocation: Allocation) -> str:
    ids = ", ".join(f"`{i.instance_id}`" for i in allocation.instances)
    zone = f" in {allocation.availability_zone}" if allocation.availability_zone else ""
    waiting = "them" if len(allocation.instances) > 1 else "it"
    return f":rocket: Launched {ids}{zone}. Waiting for {waiting} to run…"


def running(allocation: Allocation) -> str:
    heading = (
        "All instances are running:"
        if len(allocation.instances) > 1
        else "The instance is running:"
    )
    lines = [f":white_check_mark: {heading}"]
    lines += [f"• {instance_line(i)}" for i in allocation.instances]
    return "\n".join(lines)


def instance_line(instance: Instance) -> str:
    parts = [f"`{instance.instance_id}`"]
    if instance.availability_zone:
        parts.append(instance.availability_zone)
    if instance.private_ip:
        parts.append(f"private {instance.private_ip}")
    if instance.public_dns:
        parts.append(f"public {instance.public_dns}")
    elif instance.public_ip:
        parts.append(f"public {instance.public_ip}")
    return " · ".join(parts)


def failed(allocation: Allocation) -> str:
    failure = allocation.failure
    if failure is None:
        return ":x: The allocation failed."
    text = f":x: The allocation failed: {escape(failure.message)}"
    if failure.hint:
        text += f"\n*What to try:* {escape(failure.hint)}"
    if allocation.instances:
        states = ", ".join(f"`{i.instance_id}` {i.state}" for i in allocation.instances)
        text += f"\nInstances: {states}"
    return text


# Modal

MODAL_TITLE = "Allocate EC2"
MODAL_SUBMIT = "Allocate"
LABEL_INSTANCE_TYPE = "Instance type"
LABEL_COUNT = "Count"
LABEL_PURPOSE = "Purpose"
LABEL_DESTINATION = "Post updates in"
PLACEHOLDER_INSTANCE_TYPE = "Choose an instance type"
PURPOSE_PLACEHOLDER = "What the instances are for (optional)"


def count_hint(max_instances: int) -> str:
    return f"A whole number from 1 to {max_instances}."


def option_label(name: str, info: InstanceTypeInfo | None) -> str:
    if info is None:
        return name[:OPTION_LABEL_MAX]
    memory = f"{info.memory_gib:g}"
    return f"{name} · {info.vcpus} vCPU · {memory} GiB"[:OPTION_LABEL_MAX]


def choose_instance_type() -> str:
    return "Choose an instance type."
