"""Signing and building the requests that Slack sends to an app's request URL.

Slack signs every request with the app's signing secret (scheme v0): the header
X-Slack-Signature is "v0=" followed by the hex HMAC-SHA256 of
f"v0:{timestamp}:{raw_body}", and X-Slack-Request-Timestamp is the Unix time in
seconds. Receivers reject timestamps more than five minutes away from their clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Slack still sends the deprecated verification token in every request. Bolt ignores
# it and checks the signature instead.
VERIFICATION_TOKEN = "sandbox-verification-token"

# Slack shows an error to the user when an app does not acknowledge within 3 s.
ACK_DEADLINE_SECONDS = 3.0
# Transport timeout. It is longer than the ack deadline so that a slow ack is
# reported with its duration instead of failing the caller.
SEND_TIMEOUT_SECONDS = 30.0

# Element types whose state is {"type": ..., "value": str}.
_TEXT_ELEMENTS = frozenset(
    {"plain_text_input", "number_input", "email_text_input", "url_text_input"}
)
# Element types whose state contains one raw value, or a list of them, in this field.
_SELECTED_FIELDS = {
    "conversations_select": "selected_conversation",
    "channels_select": "selected_channel",
    "users_select": "selected_user",
    "datepicker": "selected_date",
    "timepicker": "selected_time",
    "multi_conversations_select": "selected_conversations",
    "multi_channels_select": "selected_channels",
    "multi_users_select": "selected_users",
}
_SINGLE_OPTION_ELEMENTS = frozenset({"static_select", "radio_buttons"})
_MULTI_OPTION_ELEMENTS = frozenset({"multi_static_select", "checkboxes"})
# Initial-value fields of an element, in the form that `values` uses.
_INITIAL_FIELDS = (
    "initial_value",
    "initial_conversation",
    "initial_channel",
    "initial_user",
    "initial_date",
    "initial_time",
    "initial_conversations",
    "initial_channels",
    "initial_users",
)
RESPONSE_URL_ELEMENTS = frozenset({"conversations_select", "channels_select"})


def sign(signing_secret: str, body: bytes, timestamp: int | str) -> str:
    """Return the X-Slack-Signature value for `body` sent at `timestamp`."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return "v0=" + digest


@dataclass(frozen=True)
class BotResponse:
    """The bot's HTTP response to one request sent to its request URL.

    Header names are in lower case. `response_url` and `trigger_id` are the values
    that the request carried, when it carried them.
    """

    status: int
    headers: dict[str, str]
    text: str
    elapsed_seconds: float
    response_url: str | None = None
    trigger_id: str | None = None

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when the body is empty or not JSON."""
        if not self.text.strip():
            return None
        try:
            return json.loads(self.text)
        except json.JSONDecodeError:
            return None


def check_loopback_url(url: str) -> None:
    """Raise ValueError unless `url` is an http URL on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"Invalid request URL {url!r}: the stand-in sends requests only to"
            " http URLs on 127.0.0.1, localhost or ::1."
        )


# An empty ProxyHandler keeps HTTP_PROXY and similar variables from routing
# loopback requests through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_signed(
    url: str,
    body: bytes,
    content_type: str,
    signing_secret: str,
    headers: Mapping[str, str] | None = None,
) -> BotResponse:
    """POST `body` to `url` with a signature for the current time.

    Entries in `headers` replace the computed ones, so a caller can send a stale
    timestamp or a wrong signature. HTTP error statuses are returned, not raised.
    """
    check_loopback_url(url)
    timestamp = str(int(time.time()))
    request_headers = {
        "Content-Type": content_type,
        "User-Agent": USER_AGENT,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": sign(signing_secret, body, timestamp),
    }
    request_headers.update(headers or {})
    request = urllib.request.Request(
        url, data=body, headers=request_headers, method="POST"
    )
    started = time.monotonic()
    try:
        with _OPENER.open(request, timeout=SEND_TIMEOUT_SECONDS) as response:
            status = response.status
            response_headers = response.headers
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        with error:
            status = error.code
            response_headers = error.headers
            text = error.read().decode("utf-8", "replace")
    elapsed = time.monotonic() - started
    if elapsed > ACK_DEADLINE_SECONDS:
        logger.warning(
            "Bot responded to %s after %.1f s, but Slack stops waiting after %.0f s",
            url,
            elapsed,
            ACK_DEADLINE_SECONDS,
        )
    lowered = {name.lower(): value for name, value in response_headers.items()}
    return BotResponse(status, lowered, text, elapsed)


def input_blocks(view: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the input blocks of a view that have an element."""
    for block in view.get("blocks") or []:
        if block.get("type") == "input" and isinstance(block.get("element"), dict):
            yield block


def build_state_values(
    view: Mapping[str, Any],
    values: Mapping[str, Any],
    current_channel: str | None,
) -> dict[str, dict[str, Any]]:
    """Build `view.state.values` as Slack submits it: {block_id: {action_id: state}}.

    `values` maps block_id to a raw value: a string or number for text inputs, an
    option value for selects, an ID for conversation, channel and user selects, or
    a list for multi-selects. Input blocks missing from `values` keep their initial
    value, which is what a user who leaves a field untouched submits.
    Raises ValueError for an unknown block_id or an option the view does not offer.
    """
    blocks = list(input_blocks(view))
    known_ids = {block["block_id"] for block in blocks}
    unknown_ids = sorted(set(values) - known_ids)
    if unknown_ids:
        raise ValueError(
            f"View {view.get('id')} has no input block {unknown_ids}. "
            f"Its input blocks are {sorted(known_ids)}."
        )
    state: dict[str, dict[str, Any]] = {}
    for block in blocks:
        element = block["element"]
        block_id = block["block_id"]
        if block_id in values:
            raw = values[block_id]
        else:
            raw = _initial_value(element, current_channel)
        state[block_id] = {element["action_id"]: _element_state(element, raw, block_id)}
    return state


def _initial_value(element: Mapping[str, Any], current_channel: str | None) -> Any:
    for name in _INITIAL_FIELDS:
        if name in element:
            return element[name]
    if "initial_option" in element:
        return element["initial_option"].get("value")
    if "initial_options" in element:
        return [option.get("value") for option in element["initial_options"]]
    if element.get("default_to_current_conversation"):
        return current_channel
    return None


def _element_state(element: Mapping[str, Any], raw: Any, block_id: str) -> dict:
    kind = element.get("type")
    if kind in _TEXT_ELEMENTS:
        return {"type": kind, "value": None if raw is None else str(raw)}
    if kind in _SELECTED_FIELDS:
        return {"type": kind, _SELECTED_FIELDS[kind]: raw}
    if kind in _SINGLE_OPTION_ELEMENTS:
        option = None if raw is None else find_option(element, raw, block_id)
        return {"type": kind, "selected_option": option}
    if kind in _MULTI_OPTION_ELEMENTS:
        options = [find_option(element, value, block_id) for value in raw or []]
        return {"type": kind, "selected_options": options}
    if kind == "external_select":
        option = None
        if raw is not None:
            text = {"type": "plain_text", "text": str(raw)}
            option = {"text": text, "value": str(raw)}
        return {"type": kind, "selected_option": option}
    if raw is not None:
        raise ValueError(f"Element type {kind!r} in block {block_id} is not supported")
    return {"type": kind}


def find_option(element: Mapping[str, Any], value: Any, block_id: str) -> dict:
    """Return the option of a select element whose value is `value`.

    Searches `options` and the options of every group in `option_groups`.
    """
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    for option in options:
        if option.get("value") == str(value):
            return dict(option)
    offered = [option.get("value") for option in options]
    raise ValueError(
        f"Block {block_id} offers no option with value {value!r}. "
        f"Offered values: {offered}."
    )


def response_url_inputs(
    view: Mapping[str, Any], state: Mapping[str, Mapping[str, Any]]
) -> Iterator[tuple[str, str, str]]:
    """Yield (block_id, action_id, channel_id) for each conversation or channel
    select with response_url_enabled that has a selected conversation."""
    for block in input_blocks(view):
        element = block["element"]
        if element.get("type") not in RESPONSE_URL_ELEMENTS:
            continue
        if not element.get("response_url_enabled"):
            continue
        action_id = element["action_id"]
        selected = state[block["block_id"]][action_id]
        channel_id = selected.get(_SELECTED_FIELDS[element["type"]])
        if channel_id:
            yield block["block_id"], action_id, channel_id


def build_view_submission(
    *,
    view: Mapping[str, Any],
    state: dict[str, dict[str, Any]],
    team: dict[str, str],
    user: dict[str, str],
    api_app_id: str,
    trigger_id: str,
    response_urls: list[dict[str, str]],
) -> dict[str, Any]:
    """Build the payload of a view_submission interaction for `view`."""
    submitted_view = dict(view)
    submitted_view["state"] = {"values": state}
    return {
        "type": "view_submission",
        "team": team,
        "user": user,
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": submitted_view,
        "response_urls": response_urls,
        "is_enterprise_install": False,
        "enterprise": None,
    }
