"""Slack's text formats as a reader sees them: mrkdwn, Block Kit and names.

Mentions such as <@U0000000001> and <#C0000000001> become the names that a
Directory holds, and blocks become lines of text, one field per line.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.sandbox.slack_workspace import BOT_USER_ID

BOT_DISPLAY_NAME = "EC2 Allocator"
ONLY_VISIBLE_TO_YOU = "only visible to you"

# The emoji the bot's messages use, and a few common ones. Others keep their
# :shortcode:, as Slack shows them when a client cannot draw them.
EMOJI = {
    "hourglass": "⌛",
    "hourglass_flowing_sand": "⏳",
    "large_green_circle": "🟢",
    "red_circle": "🔴",
    "rocket": "🚀",
    "white_check_mark": "✅",
    "x": "❌",
    "warning": "⚠",
    "information_source": "ℹ",
    "tada": "🎉",
}

_ANGLE_TOKEN = re.compile(r"<([^<>\n]+)>")
_EMOJI_CODE = re.compile(r":([a-z0-9_+-]+):")
_BOLD_LABEL = re.compile(r"^\*(.+)\*$")
# Slack's *bold*: the asterisks touch the text inside them and are not part of
# a word outside, so 2*3*4 and "* list item" stay as typed.
_BOLD_SPAN = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])")
_SPECIAL_MENTIONS = {"channel": "@channel", "here": "@here", "everyone": "@everyone"}


@dataclass(frozen=True)
class Conversation:
    """A conversation the person can type in, as the terminal lists it."""

    id: str
    name: str  # "#general" for a channel, "DM with Grace Hopper" for a DM
    bot_is_member: bool
    note: str = ""


class Directory:
    """Display names of users and conversations, for mentions and headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, str] = {BOT_USER_ID: BOT_DISPLAY_NAME}
        self._conversations: dict[str, Conversation] = {}

    def add_user(self, user_id: str, real_name: str) -> None:
        with self._lock:
            self._users[user_id] = real_name

    def add_conversation(self, conversation: Conversation) -> None:
        with self._lock:
            self._conversations[conversation.id] = conversation

    def user_name(self, user_id: str) -> str:
        with self._lock:
            return self._users.get(user_id, user_id)

    def conversation(self, conversation_id: str) -> Conversation | None:
        with self._lock:
            return self._conversations.get(conversation_id)

    def conversations(self) -> list[Conversation]:
        with self._lock:
            return list(self._conversations.values())

    def conversation_name(self, conversation_id: str) -> str:
        found = self.conversation(conversation_id)
        if found is not None:
            return found.name
        if conversation_id.startswith("D"):
            return "a DM"
        return "#" + conversation_id


def mrkdwn_to_text(text: str, directory: Directory) -> str:
    """Convert Slack mrkdwn to displayed text; *bold* and `code` stay as typed.

    Mentions become names, links show their label and URL, and the escaped
    characters &lt; &gt; &amp; are restored.
    """

    def replace(match: re.Match[str]) -> str:
        return _angle_token(match.group(1), directory)

    text = _ANGLE_TOKEN.sub(replace, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def _angle_token(token: str, directory: Directory) -> str:
    target, _, label = token.partition("|")
    if target.startswith("@"):
        user_id = target[1:]
        name = directory.user_name(user_id)
        return "@" + (label if name == user_id and label else name)
    if target.startswith("#"):
        conversation_id = target[1:]
        if label and directory.conversation(conversation_id) is None:
            return "#" + label
        return directory.conversation_name(conversation_id)
    if target.startswith("!"):
        keyword = target[1:].split("^", 1)[0]
        if keyword in _SPECIAL_MENTIONS:
            return _SPECIAL_MENTIONS[keyword]
        return label or "@" + keyword
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    if label and label != target:
        return f"{label} ({target})"
    return target


def text_object(value: Any, directory: Directory) -> str:
    """Return the text of a Block Kit text object (plain_text or mrkdwn)."""
    if not isinstance(value, dict):
        return ""
    text = str(value.get("text") or "")
    if value.get("type") == "mrkdwn":
        return mrkdwn_to_text(text, directory)
    return _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def blocks_to_lines(
    blocks: Iterable[dict[str, Any]], directory: Directory
) -> list[str]:
    """Render Block Kit blocks as lines of text, one field per line."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            lines += _section_lines(block, directory)
        elif kind == "context":
            parts = [
                _context_element(e, directory) for e in block.get("elements") or []
            ]
            lines += " ".join(p for p in parts if p).splitlines()
        elif kind == "header":
            lines.append(text_object(block.get("text"), directory).upper())
        elif kind == "divider":
            lines.append("─" * 20)
        elif kind == "actions":
            buttons = [
                f"[{text_object(e.get('text'), directory)}]"
                for e in block.get("elements") or []
            ]
            lines.append(" ".join(buttons))
        elif kind == "image":
            lines.append(f"[image: {block.get('alt_text', '')}]")
        else:
            lines.append(f"[{kind} block]")
    return lines


def _section_lines(block: dict[str, Any], directory: Directory) -> list[str]:
    lines = text_object(block.get("text"), directory).splitlines()
    for field in block.get("fields") or []:
        first, _, rest = text_object(field, directory).partition("\n")
        bold = _BOLD_LABEL.match(first.strip())
        if bold and rest:
            value = ", ".join(
                line.strip() for line in rest.splitlines() if line.strip()
            )
            lines.append(f"{bold.group(1)}: {value}")
        else:
            lines += [first, *rest.splitlines()]
    return lines


def _context_element(element: dict[str, Any], directory: Directory) -> str:
    """Return a context element as text, with *bold* shown without asterisks.

    Field labels in sections lose their asterisks too, so a context label such
    as "*Purpose:*" reads like the labels above it.
    """
    if element.get("type") == "image":
        return f"[{element.get('alt_text', 'image')}]"
    if element.get("type") == "mrkdwn":
        text = _BOLD_SPAN.sub(r"\1", str(element.get("text") or ""))
        return mrkdwn_to_text(text, directory)
    return text_object(element, directory)


def message_lines(
    text: str | None, blocks: list[dict[str, Any]] | None, directory: Directory
) -> list[str]:
    """Return what Slack shows for a message: its blocks, or its text without them."""
    if blocks:
        return blocks_to_lines(blocks, directory)
    return mrkdwn_to_text(text or "", directory).splitlines() or [""]


def clock_time(ts: str | None) -> str:
    """Return the local time of a Slack ts ("1700000000.000100") as HH:MM:SS."""
    try:
        moment = datetime.fromtimestamp(float(ts or ""))
    except ValueError:
        moment = datetime.now()
    return moment.strftime("%H:%M:%S")
