"""The channel view: the stand-in's events shown as Slack would show them.

Top-level messages appear with the author and time, thread replies indented
under their parent, edits with the lines that changed, and ephemeral
messages and DMs from the bot marked as such.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bot.sandbox.slack_text import (
    BOT_DISPLAY_NAME,
    ONLY_VISIBLE_TO_YOU,
    Conversation,
    Directory,
    clock_time,
    message_lines,
    text_object,
)
from bot.sandbox.slack_workspace import BOT_USER_ID, Event, EventKind

# The first field of the bot's allocation message: "*Allocation*\n`alloc-…`".
ALLOCATION_FIELD = re.compile(r"\*Allocation\*\n`(alloc-[0-9a-f]{16})`")


@dataclass
class _RenderedMessage:
    """A message as last rendered, so that replies and edits can refer to it."""

    label: str
    lines: list[str]


class ChannelRenderer:
    """Subscriber to the stand-in's events that shows them as Slack would.

    `show` receives the lines of one event at a time and must be thread-safe,
    because events arrive on the stand-in's request threads.
    """

    def __init__(self, directory: Directory, show: Callable[[list[str]], None]):
        self.directory = directory
        self.show = show
        self._lock = threading.Lock()
        self._shown: dict[tuple[str, str], _RenderedMessage] = {}
        self._bot_dms: set[str] = set()
        # IDs from the bot's allocation messages, in the order they first appeared
        self.allocation_ids: list[str] = []

    def __call__(self, event: Event) -> None:
        lines = self.render(event)
        if lines:
            self.show(lines)

    def render(self, event: Event) -> list[str]:
        """Return the lines for one event; an empty list when nothing is shown."""
        with self._lock:
            self._collect_allocation_ids(event)
            if event.kind is EventKind.MESSAGE_POSTED:
                return self._posted(event)
            if event.kind is EventKind.MESSAGE_UPDATED:
                return self._updated(event)
            if event.kind is EventKind.EPHEMERAL_POSTED:
                return self._ephemeral(event)
            if event.kind is EventKind.RESPONSE_URL_POSTED:
                return self._response_url(event)
            if event.kind in (EventKind.VIEW_UPDATED, EventKind.VIEW_PUSHED):
                title = text_object((event.view or {}).get("title"), self.directory)
                return [f"{BOT_DISPLAY_NAME} changed the form: {title}"]
            # The terminal shows an opened modal itself when it prompts for the fields.
            return []

    def _posted(self, event: Event) -> list[str]:
        channel = event.channel or ""
        body = message_lines(event.text, event.blocks, self.directory)
        author = self.directory.user_name(event.user or "")
        when = clock_time(event.ts)
        if event.thread_ts:
            parent = self._shown.get((channel, event.thread_ts))
            label = parent.label if parent else clock_time(event.thread_ts)
            header = f"  ↳ {author} · {when} · in the thread of {label}"
            return [header, *_indent(body, "    ")]
        label = allocation_id(event) or f"the message of {when}"
        self._shown[(channel, event.ts or "")] = _RenderedMessage(label, body)
        return [
            f"{self._place(channel, event.user)} · {author} · {when}",
            *_indent(body),
        ]

    def _updated(self, event: Event) -> list[str]:
        channel = event.channel or ""
        body = message_lines(event.text, event.blocks, self.directory)
        key = (channel, event.ts or "")
        before = self._shown.get(key)
        changed = (
            body
            if before is None
            else [line for line in body if line not in before.lines]
        )
        label = before.label if before else clock_time(event.ts)
        self._shown[key] = _RenderedMessage(label, body)
        author = self.directory.user_name(event.user or "")
        where = self._place(channel, event.user)
        header = f"{where} · {author} · {clock_time(event.ts)} (edited)"
        if label != clock_time(event.ts):
            header += f" · {label}"
        return [header, *_indent(changed or ["(no visible change)"])]

    def _ephemeral(self, event: Event) -> list[str]:
        body = message_lines(event.text, event.blocks, self.directory)
        where = self.directory.conversation_name(event.channel or "")
        when = clock_time(None)
        header = f"{where} · {BOT_DISPLAY_NAME} · {when} · {ONLY_VISIBLE_TO_YOU}"
        return [header, *_indent(body)]

    def _response_url(self, event: Event) -> list[str]:
        if event.response_type != "in_channel":
            lines = self._ephemeral(event)
        else:
            body = message_lines(event.text, event.blocks, self.directory)
            where = self.directory.conversation_name(event.channel or "")
            header = f"{where} · {BOT_DISPLAY_NAME} · {clock_time(None)}"
            lines = [header, *_indent(body)]
        if event.replace_original:
            lines[0] += " · replaces the earlier message"
        return lines

    def _place(self, channel: str, author: str | None) -> str:
        """Return where a message appears: a channel name, or a DM from the bot.

        The first message in an unknown DM comes from the bot, because only
        the bot posts, so that DM is added to the conversations one can use.
        """
        if channel in self._bot_dms:
            return f"DM from {BOT_DISPLAY_NAME}"
        known = self.directory.conversation(channel)
        if known is not None:
            return known.name
        if channel.startswith("D") and author == BOT_USER_ID:
            self._bot_dms.add(channel)
            name = f"DM with {BOT_DISPLAY_NAME}"
            self.directory.add_conversation(Conversation(channel, name, True))
            return f"DM from {BOT_DISPLAY_NAME}"
        return self.directory.conversation_name(channel)

    def _collect_allocation_ids(self, event: Event) -> None:
        found = allocation_id(event)
        if found is not None and found not in self.allocation_ids:
            self.allocation_ids.append(found)


def allocation_id(event: Event) -> str | None:
    """Return the ID of the allocation whose message the bot posted or updated.

    Only a top-level message from the bot counts, and only when its first
    block is a section whose first field is "*Allocation*" and the ID. IDs in
    other text, such as a purpose, a thread reply or what a person typed, may
    name allocations that this run never recorded. The bot sends its
    allocation message through response_url when it can neither post nor DM,
    so that message counts too.
    """
    if event.thread_ts or not event.blocks:
        return None
    if event.kind in (EventKind.MESSAGE_POSTED, EventKind.MESSAGE_UPDATED):
        if event.user != BOT_USER_ID:
            return None
    elif event.kind is not EventKind.RESPONSE_URL_POSTED:
        return None
    first_block = event.blocks[0]
    fields = first_block.get("fields") if first_block.get("type") == "section" else None
    if not fields or not isinstance(fields[0], dict):
        return None
    found = ALLOCATION_FIELD.fullmatch(str(fields[0].get("text") or ""))
    return found.group(1) if found else None


def _indent(lines: list[str], prefix: str = "  ") -> list[str]:
    return [prefix + line if line else "" for line in lines]
