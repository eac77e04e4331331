"""Local stand-in for the Slack Web API, and the sender of Slack's requests to the bot.

The stand-in listens on 127.0.0.1 and serves two kinds of path:

- ``/api/<method>``: the Web API methods the bot calls, served from the in-memory
  workspace of slack_workspace (users, channels, DMs, messages, threads, modals).
- ``POST /response/<token>``: the response_url of each command it sends.

It also sends signed slash commands and view submissions to the bot's request URL.
Every Web API call and response_url post is recorded for tests, and subscribers get
an event for each change that a Slack user would see.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

from bot.sandbox import slack_requests
from bot.sandbox.slack_requests import FORM_CONTENT_TYPE, BotResponse
from bot.sandbox.slack_workspace import (
    API_APP_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    ApiError,
    Event,
    EventKind,
    Message,
    Workspace,
)

logger = logging.getLogger(__name__)

BOT_SCOPES = "commands,chat:write,im:write,users:read,users:read.email"
JSON_CONTENT_TYPE = "application/json"

# Slack accepts up to 5 posts to a response_url within 30 minutes of the command.
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_LIFETIME_SECONDS = 30 * 60


@dataclass(frozen=True)
class Call:
    """One recorded Web API call or response_url post.

    `method` is the Web API method name, or "response_url" for a post to a
    response_url, whose JSON body is then `args`. `args` never contains the token.
    """

    method: str
    args: dict[str, Any]
    response: dict[str, Any]
    status: int = 200
    response_url: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


@dataclass
class _ResponseTarget:
    channel_id: str
    user_id: str
    issued_at: float
    uses: int = 0


class SlackStandin:
    """Slack's side of the bot's traffic, on 127.0.0.1.

    The bot's WebClient gets `api_url` as its base URL. `request_url` is the bot's
    Slack request URL (for example http://127.0.0.1:3000/slack/events) and may be
    set after construction. All public methods are thread-safe.
    """

    def __init__(
        self,
        bot_token: str,
        signing_secret: str,
        request_url: str | None = None,
        *,
        port: int = 0,
    ) -> None:
        if request_url is not None:
            slack_requests.check_loopback_url(request_url)
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.request_url = request_url
        self._port = port
        self._condition = threading.Condition(threading.RLock())
        self._workspace = Workspace()
        self._calls: list[Call] = []
        self._observers: list[Callable[[Event], None]] = []
        self._failures: dict[str, deque[str]] = defaultdict(deque)
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._server: _StandinServer | None = None
        self._thread: threading.Thread | None = None
        self.add_channel(DEFAULT_CHANNEL_ID, "#general")
        self.add_user(DEFAULT_USER_ID, "Ada Lovelace", "ada@example.com")

    # Lifecycle

    def start(self) -> SlackStandin:
        """Bind 127.0.0.1 and serve on a background thread."""
        if self._server is not None:
            return self
        server = _StandinServer(("127.0.0.1", self._port), _StandinHandler)
        server.standin = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-standin",
            daemon=True,
        )
        self._thread.start()
        logger.info("Slack stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None
        logger.info("Slack stand-in stopped")

    def __enter__(self) -> SlackStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, for example http://127.0.0.1:54321. Raises before start()."""
        if self._server is None:
            raise RuntimeError("The Slack stand-in is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """Web API base URL for WebClient(base_url=...)."""
        return self.url + "/api/"

    # Workspace and failure injection

    def add_channel(self, id: str, name: str, bot_is_member: bool = True) -> None:
        """Add or replace a channel. A leading "#" in `name` is dropped."""
        with self._condition:
            self._workspace.add_channel(id, name, bot_is_member)

    def add_user(self, id: str, name: str, email: str) -> None:
        with self._condition:
            self._workspace.add_user(id, name, email)

    def fail_next(self, method: str, error: str, count: int = 1) -> None:
        """Make the next `count` calls of `method` fail with `error`.

        The error "ratelimited" is returned with HTTP 429 and Retry-After: 1.
        """
        with self._condition:
            self._failures[method].extend([error] * count)

    def issue_trigger(
        self, user_id: str = DEFAULT_USER_ID, channel_id: str | None = None
    ) -> str:
        """Return a new trigger_id that views.open or views.push accepts once."""
        with self._condition:
            return self._workspace.issue_trigger(user_id, channel_id)

    def expire_trigger(self, trigger_id: str) -> None:
        """Make views.open and views.push return expired_trigger_id for it.

        The trigger_id may be one that a later send_command() call will carry.
        """
        with self._condition:
            self._workspace.expire_trigger(trigger_id)

    # Recording and subscribers

    def calls(self, method: str | None = None) -> list[Call]:
        with self._condition:
            return [c for c in self._calls if method is None or c.method == method]

    def messages(self, channel_id: str) -> list[Message]:
        """Return copies of the top-level messages of a conversation with replies.

        A user ID stands for the bot's DM with that user.
        """
        with self._condition:
            return self._workspace.messages(channel_id)

    def view(self, view_id: str) -> dict[str, Any]:
        """Return a copy of a modal opened by the bot. Raises KeyError if unknown."""
        with self._condition:
            return copy.deepcopy(self._workspace.views[view_id])

    def wait_for(self, predicate: Callable[[Call], bool], timeout: float = 5.0) -> Call:
        """Return the first recorded call that satisfies `predicate`.

        Waits until such a call is recorded. Raises TimeoutError, listing the
        recorded calls, when none is recorded within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        checked = 0
        with self._condition:
            while True:
                for call in self._calls[checked:]:
                    if predicate(call):
                        return call
                checked = len(self._calls)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._describe_calls(timeout))
                self._condition.wait(remaining)

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` with every event and return a function that unsubscribes.

        Callbacks run on the server's request threads. An exception in a callback
        is logged and does not affect the request.
        """
        with self._condition:
            self._observers.append(callback)

        def unsubscribe() -> None:
            with self._condition:
                if callback in self._observers:
                    self._observers.remove(callback)

        return unsubscribe

    # Requests to the bot

    def sign(self, body: bytes, timestamp: int | str) -> str:
        """Return the X-Slack-Signature value for `body` sent at `timestamp`."""
        return slack_requests.sign(self.signing_secret, body, timestamp)

    def send_signed(
        self,
        body: bytes,
        content_type: str = FORM_CONTENT_TYPE,
        headers: Mapping[str, str] | None = None,
    ) -> BotResponse:
        """POST `body` to the request URL, signed for the current time.

        Entries in `headers` replace the computed X-Slack-* headers.
        """
        if self.request_url is None:
            raise RuntimeError(
                "request_url is not set. Set it to the bot's Slack request URL, "
                "for example http://127.0.0.1:3000/slack/events"
            )
        return slack_requests.post_signed(
            self.request_url, body, content_type, self.signing_secret, headers
        )

    def send_command(
        self,
        text: str,
        command: str = "/allocate",
        *,
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = DEFAULT_CHANNEL_ID,
        channel_name: str | None = None,
        trigger_id: str | None = None,
        response_url: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> BotResponse:
        """Send a slash command to the bot and return its acknowledgement.

        A new trigger_id and response_url are issued unless given, so a retry can
        resend those of the first attempt. Raises ValueError for an unknown user,
        or for an unknown channel without `channel_name`.
        """
        with self._condition:
            user = self._workspace.known_user(user_id)
            channel_name = channel_name or self._workspace.channel_name(channel_id)
            trigger_id = self._workspace.issue_trigger(user_id, channel_id, trigger_id)
            if response_url is None:
                response_url = self._issue_response_url(channel_id, user_id)
        form = {
            "token": slack_requests.VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user.handle,
            "command": command,
            "text": text,
            "api_app_id": API_APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        headers = _retry_headers(retry_num, retry_reason)
        headers.update(extra_headers or {})
        logger.info("Sending %s from %s in %s", command, user_id, channel_id)
        result = self.send_signed(urlencode(form).encode(), FORM_CONTENT_TYPE, headers)
        return replace(result, response_url=response_url, trigger_id=trigger_id)

    def send_view_submission(
        self,
        view: str | Mapping[str, Any],
        values: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        response_urls: list[dict[str, str]] | None = None,
    ) -> BotResponse:
        """Submit a modal that the bot opened and return the bot's response.

        `view` is a view ID or a view with an "id". `values` maps block_id to a raw
        value (see slack_requests.build_state_values). The submitting user defaults
        to the one the modal was opened for. Unless `response_urls` is given, each
        conversation or channel select with response_url_enabled gets a new
        response_url for the selected conversation.
        """
        view_id = view if isinstance(view, str) else view["id"]
        with self._condition:
            if view_id not in self._workspace.views:
                raise ValueError(f"No modal with ID {view_id!r} was opened")
            stored = copy.deepcopy(self._workspace.views[view_id])
            origin = self._workspace.view_origins[view_id]
            user = self._workspace.known_user(user_id or origin.user_id)
            state = slack_requests.build_state_values(
                stored, values or {}, origin.channel_id
            )
            if response_urls is None:
                response_urls = self._issue_view_response_urls(stored, state, user.id)
            trigger_id = self._workspace.issue_trigger(user.id, origin.channel_id)
        payload = slack_requests.build_view_submission(
            view=stored,
            state=state,
            team={"id": TEAM_ID, "domain": TEAM_DOMAIN},
            user={
                "id": user.id,
                "username": user.handle,
                "name": user.handle,
                "team_id": TEAM_ID,
            },
            api_app_id=API_APP_ID,
            trigger_id=trigger_id,
            response_urls=response_urls,
        )
        body = urlencode({"payload": json.dumps(payload)}).encode()
        logger.info("Sending view_submission of %s from %s", view_id, user.id)
        result = self.send_signed(body, FORM_CONTENT_TYPE)
        return replace(result, trigger_id=trigger_id)

    # Requests from the bot, called by _StandinHandler

    def _handle_api_request(
        self, method: str, headers: Mapping[str, str], body: bytes, query: str
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Handle one Web API request and return status, extra headers and JSON body."""
        status = 200
        # Bolt reads the bot's scopes from this header of the auth.test response.
        extra_headers = {"x-oauth-scopes": BOT_SCOPES}
        args: dict[str, Any] = {}
        events: list[Event] = []
        with self._condition:
            try:
                args, token = _parse_api_args(headers, body, query)
                self._check_token(token)
                self._raise_injected_failure(method)
                response, events = self._workspace.call(method, args)
            except ApiError as error:
                response = error.as_response()
                if error.error == "ratelimited":
                    status = 429
                    extra_headers["Retry-After"] = "1"
            self._record(Call(method, args, response, status))
        if not response["ok"]:
            logger.info("Web API %s returned %s", method, response["error"])
        self._notify(events)
        return status, extra_headers, response

    def _handle_response_url(self, token: str, body: bytes) -> tuple[int, dict]:
        """Record a post to a response_url and return the status and JSON body."""
        url = f"{self.url}/response/{token}"
        target = None
        with self._condition:
            try:
                args = _parse_json_object(body)
                target = self._use_response_url(token)
                status, response = 200, {"ok": True}
            except ApiError as error:
                args = {}
                status = 400 if error.error == "invalid_json" else 404
                response = error.as_response()
            self._record(Call("response_url", args, response, status, url))
        if target is None:
            logger.warning("Post to a response_url failed: %s", response["error"])
            return status, response
        event = Event(
            EventKind.RESPONSE_URL_POSTED,
            channel=target.channel_id,
            user=target.user_id,
            text=args.get("text"),
            blocks=copy.deepcopy(args.get("blocks")),
            response_type=args.get("response_type", "ephemeral"),
            replace_original=_is_true(args.get("replace_original")),
        )
        self._notify([event])
        return status, response

    # Helpers that run with the lock held, except _notify

    def _check_token(self, token: str | None) -> None:
        if not token:
            raise ApiError("not_authed")
        if not secrets.compare_digest(token.encode(), self.bot_token.encode()):
            raise ApiError("invalid_auth")

    def _raise_injected_failure(self, method: str) -> None:
        pending = self._failures.get(method)
        if pending:
            raise ApiError(pending.popleft())

    def _record(self, call: Call) -> None:
        self._calls.append(call)
        self._condition.notify_all()

    def _notify(self, events: list[Event]) -> None:
        with self._condition:
            observers = list(self._observers)
        for event in events:
            for callback in observers:
                try:
                    callback(event)
                except Exception:
                    logger.exception("Subscriber %r failed on %s", callback, event.kind)

    def _issue_response_url(self, channel_id: str, user_id: str) -> str:
        token = secrets.token_urlsafe(18)
        target = _ResponseTarget(channel_id, user_id, time.monotonic())
        self._response_targets[token] = target
        return f"{self.url}/response/{token}"

    def _issue_view_response_urls(
        self, view: dict[str, Any], state: dict[str, Any], user_id: str
    ) -> list[dict[str, str]]:
        entries = []
        inputs = slack_requests.response_url_inputs(view, state)
        for block_id, action_id, channel_id in inputs:
            entry = {
                "block_id": block_id,
                "action_id": action_id,
                "channel_id": channel_id,
                "response_url": self._issue_response_url(channel_id, user_id),
            }
            entries.append(entry)
        return entries

    def _use_response_url(self, token: str) -> _ResponseTarget:
        # NOTE: these error codes are this stand-in's own, not checked against Slack.
        target = self._response_targets.get(token)
        if target is None:
            raise ApiError("no_active_hooks")
        age = time.monotonic() - target.issued_at
        if age > RESPONSE_URL_LIFETIME_SECONDS:
            raise ApiError("expired_url")
        if target.uses >= RESPONSE_URL_MAX_USES:
            raise ApiError("used_url")
        target.uses += 1
        return target

    def _describe_calls(self, timeout: float) -> str:
        lines = [
            f"No recorded Slack call matched within {timeout:g} s; "
            f"{len(self._calls)} calls were recorded:"
        ]
        listed_calls = self._calls[-20:]
        if len(self._calls) > len(listed_calls):
            omitted = len(self._calls) - len(listed_calls)
            lines.append(f"  ... {omitted} earlier calls")
        for call in listed_calls:
            lines.append("  " + _describe_call(call))
        return "\n".join(lines)


class _StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    standin: SlackStandin

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("Slack stand-in failed to handle a request")


class _StandinHandler(BaseHTTPRequestHandler):
    server: _StandinServer

    def do_GET(self) -> None:
        self._handle(allow_response_url=False)

    def do_POST(self) -> None:
        self._handle(allow_response_url=True)

    def _handle(self, allow_response_url: bool) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        standin = self.server.standin
        headers: dict[str, str] = {}
        if path.startswith("/api/"):
            method = path.removeprefix("/api/")
            status, headers, payload = standin._handle_api_request(
                method, self.headers, body, query
            )
        elif path.startswith("/response/") and allow_response_url:
            token = path.removeprefix("/response/")
            status, payload = standin._handle_response_url(token, body)
        else:
            # Only the first path segment is logged because a response_url path
            # contains its secret token.
            segment = path.lstrip("/").split("/", 1)[0]
            logger.warning("No route for %s /%s/...", self.command, segment)
            status, payload = 404, {"ok": False, "error": "not_found"}
        self._send_json(status, payload, headers)

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: Mapping[str, str]
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request line to stderr. The path of a
        # response_url contains its secret token, so only Web API paths are logged.
        if self.path.startswith("/api/"):
            logger.debug("%s %s", self.command, self.path.partition("?")[0])


def _parse_api_args(
    headers: Mapping[str, str], body: bytes, query: str
) -> tuple[dict[str, Any], str | None]:
    """Return the arguments and token of a Web API request.

    Arguments come from the query string and from a JSON or form-encoded body.
    The token comes from "Authorization: Bearer ..." or, unless the body is JSON,
    from a "token" field.
    """
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if body:
        if content_type == JSON_CONTENT_TYPE:
            args.update(_parse_json_object(body))
        elif content_type == FORM_CONTENT_TYPE:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ApiError("invalid_form_data") from error
            args.update(parse_qsl(text, keep_blank_values=True))
        elif not content_type:
            raise ApiError("missing_post_type")
        else:
            # NOTE: multipart/form-data (file uploads) is not supported.
            raise ApiError("invalid_post_type")
    form_token = args.pop("token", None)
    authorization = headers.get("Authorization") or ""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return args, credentials.strip()
    if content_type != JSON_CONTENT_TYPE and isinstance(form_token, str):
        return args, form_token
    return args, None


def _parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError("invalid_json") from error
    if not isinstance(parsed, dict):
        raise ApiError("invalid_json")
    return parsed


def _is_true(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _retry_headers(retry_num: int | None, retry_reason: str | None) -> dict[str, str]:
    headers = {}
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
    if retry_reason is not None:
        headers["X-Slack-Retry-Reason"] = retry_reason
    return headers


def _describe_call(call: Call) -> str:
    outcome = "ok" if call.ok else f"error={call.response.get('error')}"
    details = []
    for key in ("channel", "thread_ts", "ts", "user", "users", "trigger_id", "text"):
        if key in call.args:
            value = str(call.args[key])
            if len(value) > 60:
                value = value[:57] + "..."
            details.append(f"{key}={value!r}")
    return " ".join([call.method, outcome, *details])
