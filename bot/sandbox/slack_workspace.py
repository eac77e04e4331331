"""In-memory model of one Slack workspace and the Web API methods that act on it.

The model has users, channels, the bot's DMs, messages with their threads, trigger
IDs and modals. `Workspace` is not thread-safe, so SlackStandin calls it only with
its lock held.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

TEAM_ID = "T0000000001"
TEAM_NAME = "Sandbox"
TEAM_DOMAIN = "sandbox"
WORKSPACE_URL = "https://sandbox.example.com/"
API_APP_ID = "A0000000001"
BOT_USER_ID = "UBOT00001"
BOT_ID = "B0000000001"
BOT_NAME = "allocator"
DEFAULT_CHANNEL_ID = "C0000000001"
DEFAULT_USER_ID = "U0000000001"


class EventKind(enum.StrEnum):
    MESSAGE_POSTED = "message_posted"
    MESSAGE_UPDATED = "message_updated"
    EPHEMERAL_POSTED = "ephemeral_posted"
    RESPONSE_URL_POSTED = "response_url_posted"
    VIEW_OPENED = "view_opened"
    VIEW_UPDATED = "view_updated"
    VIEW_PUSHED = "view_pushed"


@dataclass(frozen=True)
class Event:
    """A change that a Slack user would see.

    `user` is the author of a posted or updated message, and the recipient of an
    ephemeral message, a response_url message or a modal.
    """

    kind: EventKind
    channel: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    user: str | None = None
    text: str | None = None
    blocks: list[dict[str, Any]] | None = None
    view: dict[str, Any] | None = None
    response_type: str | None = None
    replace_original: bool = False


@dataclass(frozen=True)
class User:
    id: str
    real_name: str
    email: str
    is_bot: bool = False

    @property
    def handle(self) -> str:
        """The user name that slash commands carry, from the e-mail's local part."""
        return self.email.split("@", 1)[0] or self.id.lower()


@dataclass(frozen=True)
class Channel:
    """A conversation. A DM of the bot has `dm_user` set and an empty name."""

    id: str
    name: str
    bot_is_member: bool = True
    dm_user: str | None = None


@dataclass
class Message:
    channel: str
    ts: str
    user: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    replies: list[Message] = field(default_factory=list)
    edited: bool = False

    def as_api_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "bot_id": BOT_ID,
            "app_id": API_APP_ID,
            "team": TEAM_ID,
            "ts": self.ts,
            "text": self.text or "",
        }
        if self.blocks is not None:
            message["blocks"] = self.blocks
        if self.thread_ts is not None:
            message["thread_ts"] = self.thread_ts
        return message


@dataclass
class Trigger:
    user_id: str
    channel_id: str | None
    used: bool = False
    expired: bool = False


class ApiError(Exception):
    def __init__(self, error: str, detail: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.detail = detail

    def as_response(self) -> dict[str, Any]:
        response: dict[str, Any] = {"ok": False, "error": self.error}
        if self.detail:
            response["response_metadata"] = {"messages": [self.detail]}
        return response


ApiResult = tuple[dict[str, Any], list[Event]]


class Workspace:
    """Users, conversations, messages and modals, changed by Web API methods."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.triggers: dict[str, Trigger] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.view_origins: dict[str, Trigger] = {}
        self._messages: dict[str, list[Message]] = defaultdict(list)
        self._last_ts_us = 0
        self._serial = 0
        self.users[BOT_USER_ID] = User(BOT_USER_ID, BOT_NAME, "", is_bot=True)
        self.api_methods: dict[str, Callable[[dict[str, Any]], ApiResult]] = {
            "auth.test": self._auth_test,
            "users.info": self._users_info,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
        }

    def call(self, method: str, args: dict[str, Any]) -> ApiResult:
        """Run a Web API method and return its response and the events it caused.

        Raises ApiError with Slack's error code when the method fails.
        """
        if method not in self.api_methods:
            raise ApiError("unknown_method")
        return self.api_methods[method](args)

    def add_channel(self, id: str, name: str, bot_is_member: bool = True) -> None:
        self.channels[id] = Channel(id, name.lstrip("#"), bot_is_member)

    def add_user(self, id: str, name: str, email: str) -> None:
        self.users[id] = User(id, name, email)

    def messages(self, channel_id: str) -> list[Message]:
        conversation_id = self.dm_id(channel_id) or channel_id
        return copy.deepcopy(self._messages.get(conversation_id, []))

    def issue_trigger(
        self, user_id: str, channel_id: str | None, trigger_id: str | None = None
    ) -> str:
        """Register a trigger_id for a user's action in a channel and return it.

        Registering a known trigger_id again updates the user and channel but keeps
        it expired or used.
        """
        if trigger_id is None:
            trigger_id = self._new_trigger_id()
        trigger = self.triggers.setdefault(trigger_id, Trigger(user_id, channel_id))
        trigger.user_id = user_id
        trigger.channel_id = channel_id
        return trigger_id

    def expire_trigger(self, trigger_id: str) -> None:
        trigger = self.triggers.setdefault(trigger_id, Trigger(DEFAULT_USER_ID, None))
        trigger.expired = True

    # Web API methods. Each raises ApiError to fail.

    def _auth_test(self, args: dict[str, Any]) -> ApiResult:
        response = {
            "ok": True,
            "url": WORKSPACE_URL,
            "team": TEAM_NAME,
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }
        return response, []

    def _users_info(self, args: dict[str, Any]) -> ApiResult:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            raise ApiError("user_not_found")
        profile = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.real_name,
            "display_name_normalized": user.real_name,
            "email": user.email,
        }
        info = {
            "id": user.id,
            "team_id": TEAM_ID,
            "name": user.handle,
            "real_name": user.real_name,
            "deleted": False,
            "is_bot": user.is_bot,
            "profile": profile,
        }
        return {"ok": True, "user": info}, []

    def _conversations_open(self, args: dict[str, Any]) -> ApiResult:
        channel_id = args.get("channel")
        if channel_id:
            return {"ok": True, "channel": {"id": self._resolve(channel_id)}}, []
        user_ids = [u for u in str(args.get("users") or "").split(",") if u]
        if not user_ids:
            raise ApiError("invalid_arguments", "either channel or users is required")
        if len(user_ids) > 1:
            # NOTE: group DMs (conversations.open with several users) are not modelled.
            raise ApiError(
                "invalid_arguments", "group DMs are not supported by the stand-in"
            )
        already_open = self.dm_id(user_ids[0]) is not None
        dm_id = self._open_dm(user_ids[0])
        channel = {"id": dm_id, "is_im": True, "user": user_ids[0]}
        response = {"ok": True, "channel": channel, "already_open": already_open}
        return response, []

    def _chat_post_message(self, args: dict[str, Any]) -> ApiResult:
        channel_id = self._resolve(args.get("channel"))
        text, blocks = _message_content(args)
        thread_ts = _optional_str(args.get("thread_ts"))
        message = Message(channel_id, self.next_ts(), BOT_USER_ID, text, blocks)
        self._insert_message(message, thread_ts)
        event = Event(
            EventKind.MESSAGE_POSTED,
            channel=channel_id,
            ts=message.ts,
            thread_ts=message.thread_ts,
            user=BOT_USER_ID,
            text=text,
            blocks=copy.deepcopy(blocks),
        )
        response = {
            "ok": True,
            "channel": channel_id,
            "ts": message.ts,
            "message": message.as_api_message(),
        }
        return response, [event]

    def _chat_update(self, args: dict[str, Any]) -> ApiResult:
        channel_id = self._resolve(args.get("channel"))
        message = self._find_message(channel_id, _optional_str(args.get("ts")))
        if message is None:
            raise ApiError("message_not_found")
        text, blocks = _message_content(args)
        message.text, message.blocks, message.edited = text, blocks, True
        event = Event(
            EventKind.MESSAGE_UPDATED,
            channel=channel_id,
            ts=message.ts,
            thread_ts=message.thread_ts,
            user=message.user,
            text=text,
            blocks=copy.deepcopy(blocks),
        )
        response = {
            "ok": True,
            "channel": channel_id,
            "ts": message.ts,
            "text": text or "",
            "message": message.as_api_message(),
        }
        return response, [event]

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> ApiResult:
        channel_id = self._resolve(args.get("channel"))
        user_id = str(args.get("user") or "")
        if user_id not in self.users:
            raise ApiError("user_not_found")
        text, blocks = _message_content(args)
        event = Event(
            EventKind.EPHEMERAL_POSTED,
            channel=channel_id,
            thread_ts=_optional_str(args.get("thread_ts")),
            user=user_id,
            text=text,
            blocks=copy.deepcopy(blocks),
        )
        return {"ok": True, "message_ts": self.next_ts()}, [event]

    def _views_open(self, args: dict[str, Any]) -> ApiResult:
        return self._show_view(args, EventKind.VIEW_OPENED)

    def _views_push(self, args: dict[str, Any]) -> ApiResult:
        return self._show_view(args, EventKind.VIEW_PUSHED)

    def _show_view(self, args: dict[str, Any], kind: EventKind) -> ApiResult:
        """Open or push a modal for a trigger, which can be used only once."""
        trigger = self._exchange_trigger(args)
        view = self._store_view(_view_arg(args), trigger)
        event = Event(
            kind,
            channel=trigger.channel_id,
            user=trigger.user_id,
            view=copy.deepcopy(view),
        )
        return {"ok": True, "view": view}, [event]

    def _views_update(self, args: dict[str, Any]) -> ApiResult:
        view_id = self._find_view_id(args)
        current = self.views[view_id]
        expected_hash = _optional_str(args.get("hash"))
        if expected_hash and expected_hash != current["hash"]:
            raise ApiError("hash_conflict")
        origin = self.view_origins[view_id]
        view = self._store_view(
            _view_arg(args), origin, view_id, current["root_view_id"]
        )
        event = Event(
            EventKind.VIEW_UPDATED,
            channel=origin.channel_id,
            user=origin.user_id,
            view=copy.deepcopy(view),
        )
        return {"ok": True, "view": view}, [event]

    # Helpers

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def next_ts(self) -> str:
        """Return a unique, increasing ts in Slack's "seconds.microseconds" form."""
        now_us = time.time_ns() // 1000
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _new_trigger_id(self) -> str:
        return f"{self._next_serial()}.{int(time.time())}.{secrets.token_hex(16)}"

    def known_user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise ValueError(f"Unknown user {user_id!r}. Add it with add_user() first.")
        return user

    def channel_name(self, channel_id: str) -> str:
        channel = self.channels.get(channel_id)
        if channel is not None:
            return channel.name or "directmessage"
        if channel_id.startswith("D"):
            return "directmessage"
        raise ValueError(
            f"Unknown channel {channel_id!r}. Add it with add_channel() "
            "or pass channel_name."
        )

    def dm_id(self, user_id: str) -> str | None:
        for channel in self.channels.values():
            if channel.dm_user == user_id:
                return channel.id
        return None

    def _open_dm(self, user_id: str) -> str:
        if user_id not in self.users or user_id == BOT_USER_ID:
            raise ApiError("user_not_found")
        dm_id = self.dm_id(user_id)
        if dm_id is None:
            dm_id = f"D{self._next_serial():010d}"
            # Skip IDs taken by conversations added with add_channel().
            while dm_id in self.channels:
                dm_id = f"D{self._next_serial():010d}"
            self.channels[dm_id] = Channel(dm_id, "", True, dm_user=user_id)
        return dm_id

    def _resolve(self, channel: Any) -> str:
        """Return the conversation ID that the bot may post into for `channel`.

        A user ID means the bot's DM with that user, as in Slack, and a name
        (with or without "#") means that channel.
        """
        channel = str(channel or "")
        if channel.startswith(("U", "W")) and channel in self.users:
            return self._open_dm(channel)
        found = self.channels.get(channel)
        if found is None:
            name = channel.lstrip("#")
            named = [c for c in self.channels.values() if name and c.name == name]
            found = named[0] if named else None
        if found is None:
            raise ApiError("channel_not_found")
        if not found.bot_is_member:
            raise ApiError("not_in_channel")
        return found.id

    def _insert_message(self, message: Message, thread_ts: str | None) -> None:
        if thread_ts is None:
            self._messages[message.channel].append(message)
            return
        parent = self._find_message(message.channel, thread_ts)
        if parent is None:
            # NOTE: Slack's response to an unknown thread_ts was not checked. This
            # stand-in posts the message at the top level and logs a warning.
            logger.warning(
                "thread_ts %s not found in %s, so the message is posted at top level",
                thread_ts,
                message.channel,
            )
            self._messages[message.channel].append(message)
            return
        if parent.thread_ts is not None:
            # A reply to a reply joins the parent's thread, as in Slack.
            parent = self._find_message(message.channel, parent.thread_ts) or parent
        message.thread_ts = parent.ts
        parent.replies.append(message)

    def _find_message(self, channel_id: str, ts: str | None) -> Message | None:
        for message in self._messages.get(channel_id, []):
            if message.ts == ts:
                return message
            for reply in message.replies:
                if reply.ts == ts:
                    return reply
        return None

    def _exchange_trigger(self, args: dict[str, Any]) -> Trigger:
        trigger_id = _optional_str(args.get("trigger_id"))
        if not trigger_id:
            raise ApiError("invalid_arguments", "missing required field: trigger_id")
        trigger = self.triggers.get(trigger_id)
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.expired:
            raise ApiError("expired_trigger_id")
        if trigger.used:
            raise ApiError("exchanged_trigger_id")
        trigger.used = True
        return trigger

    def _find_view_id(self, args: dict[str, Any]) -> str:
        view_id = _optional_str(args.get("view_id"))
        external_id = _optional_str(args.get("external_id"))
        if view_id is None and external_id is None:
            raise ApiError("invalid_arguments", "view_id or external_id is required")
        if view_id in self.views:
            return view_id
        for candidate_id, view in self.views.items():
            if external_id and view.get("external_id") == external_id:
                return candidate_id
        raise ApiError("not_found")

    def _store_view(
        self,
        view: dict[str, Any],
        origin: Trigger,
        view_id: str | None = None,
        root_view_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a modal as Slack returns it: with IDs, hash, state and defaults."""
        if view.get("type") != "modal":
            raise ApiError("invalid_arguments", "view.type must be modal")
        stored = copy.deepcopy(view)
        # Slack's view IDs are unique across workspaces and time, so a random
        # part keeps two stand-ins in one process from issuing the same ID.
        view_id = view_id or f"V{secrets.token_hex(5).upper()}"
        stored.setdefault("private_metadata", "")
        stored.setdefault("callback_id", "")
        stored.setdefault("external_id", "")
        stored.update(
            id=view_id,
            team_id=TEAM_ID,
            app_id=API_APP_ID,
            bot_id=BOT_ID,
            root_view_id=root_view_id or view_id,
            state={"values": {}},
            hash=f"{int(time.time())}.{secrets.token_hex(4)}",
        )
        self._fill_block_ids(stored)
        self.views[view_id] = stored
        self.view_origins[view_id] = origin
        return copy.deepcopy(stored)

    def _fill_block_ids(self, view: dict[str, Any]) -> None:
        """Give blocks and input elements without IDs generated ones, as Slack does."""
        for block in view.get("blocks") or []:
            block.setdefault("block_id", f"b{self._next_serial()}")
            element = block.get("element")
            if isinstance(element, dict):
                element.setdefault("action_id", f"a{self._next_serial()}")


def _decode_json_arg(value: Any, error: str) -> Any:
    """Return a JSON argument, which form-encoded requests send as a string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as decode_error:
        raise ApiError(error) from decode_error


def _message_content(args: dict[str, Any]) -> tuple[str | None, list | None]:
    text = _optional_str(args.get("text"))
    blocks = _decode_json_arg(args.get("blocks"), "invalid_blocks")
    if blocks is not None and not isinstance(blocks, list):
        raise ApiError("invalid_blocks")
    if not text and not blocks and not args.get("attachments"):
        raise ApiError("no_text")
    return text, blocks


def _view_arg(args: dict[str, Any]) -> dict[str, Any]:
    view = _decode_json_arg(args.get("view"), "invalid_arguments")
    if not isinstance(view, dict):
        raise ApiError("invalid_arguments", "missing required field: view")
    return view


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
