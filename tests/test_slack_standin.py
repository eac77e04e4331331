"""Tests of the local Slack stand-in, driven by slack_sdk clients over 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from bot.sandbox.slack_standin import Call, SlackStandin
from bot.sandbox.slack_workspace import Event, EventKind

BOT_TOKEN = "xoxb-standin-test"
SIGNING_SECRET = "standin-signing-secret"
CHANNEL = "C0000000001"
ADA = "U0000000001"

MODAL = {
    "type": "modal",
    "callback_id": "allocate_form",
    "private_metadata": '{"origin": "command"}',
    "title": {"type": "plain_text", "text": "Allocate"},
    "submit": {"type": "plain_text", "text": "Allocate"},
    "blocks": [
        {
            "type": "input",
            "block_id": "instance_type",
            "label": {"type": "plain_text", "text": "Instance type"},
            "element": {
                "type": "static_select",
                "action_id": "value",
                "option_groups": [
                    {
                        "label": {"type": "plain_text", "text": "Burstable"},
                        "options": [
                            {
                                "text": {"type": "plain_text", "text": "t3.micro"},
                                "value": "t3.micro",
                            },
                            {
                                "text": {"type": "plain_text", "text": "t3.2xlarge"},
                                "value": "t3.2xlarge",
                            },
                        ],
                    }
                ],
            },
        },
        {
            "type": "input",
            "block_id": "quantity",
            "label": {"type": "plain_text", "text": "Quantity"},
            "element": {
                "type": "number_input",
                "action_id": "value",
                "is_decimal_allowed": False,
                "initial_value": "1",
            },
        },
        {
            "type": "input",
            "block_id": "purpose",
            "optional": True,
            "label": {"type": "plain_text", "text": "Purpose"},
            "element": {"type": "plain_text_input", "action_id": "value"},
        },
        {
            "type": "input",
            "block_id": "report_to",
            "label": {"type": "plain_text", "text": "Report to"},
            "element": {
                "type": "conversations_select",
                "action_id": "value",
                "default_to_current_conversation": True,
                "response_url_enabled": True,
            },
        },
    ],
}


class Receiver:
    """A bot's request URL on 127.0.0.1 that checks signatures as Bolt does.

    It responds with 401 to a request whose signature SignatureVerifier rejects, and
    otherwise with 200 and `reply_body`.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply_body = b""
        self.verifier = SignatureVerifier(SIGNING_SECRET)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                valid = receiver.verifier.is_valid_request(body, headers)
                receiver.requests.append(
                    {"headers": headers, "body": body, "valid": valid}
                )
                reply = receiver.reply_body if valid else b""
                self.send_response(200 if valid else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    def last_form(self) -> dict[str, str]:
        fields = parse_qs(self.requests[-1]["body"].decode(), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep slack_sdk clients from sending loopback requests through a proxy."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def standin(receiver: Receiver) -> Iterator[SlackStandin]:
    with SlackStandin(BOT_TOKEN, SIGNING_SECRET, receiver.url) as standin:
        yield standin


@pytest.fixture
def client(standin: SlackStandin) -> WebClient:
    return WebClient(token=BOT_TOKEN, base_url=standin.api_url)


def api_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    return excinfo.value.response["error"]


def post_form(url: str, fields: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request) as response:
        return json.loads(response.read())


# Web API


def test_post_message_threads_and_update(standin: SlackStandin, client: WebClient):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Allocating*"}}]
    parent = client.chat_postMessage(channel=CHANNEL, text="Allocating", blocks=blocks)
    reply = client.chat_postMessage(
        channel=CHANNEL, text="Launching", thread_ts=parent["ts"]
    )
    nested = client.chat_postMessage(
        channel=CHANNEL, text="Running", thread_ts=reply["ts"]
    )
    updated = client.chat_update(channel=CHANNEL, ts=parent["ts"], text="Allocated")

    assert parent["channel"] == CHANNEL
    assert parent["message"]["blocks"] == blocks
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert nested["message"]["thread_ts"] == parent["ts"]
    assert updated["ts"] == parent["ts"]
    # slack-sdk sends chat.postMessage as JSON, so blocks arrive as a list.
    assert standin.calls("chat.postMessage")[0].args["blocks"] == blocks
    [message] = standin.messages(CHANNEL)
    assert message.text == "Allocated"
    assert message.edited
    assert [r.text for r in message.replies] == ["Launching", "Running"]


def test_ts_values_are_unique_and_increasing(client: WebClient):
    stamps = [
        client.chat_postMessage(channel=CHANNEL, text="x")["ts"] for _ in range(5)
    ]

    for ts in stamps:
        assert re.fullmatch(r"\d{10}\.\d{6}", ts), ts
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == len(stamps)


def test_chat_update_unknown_ts(client: WebClient):
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_update(channel=CHANNEL, ts="1.000001", text="x")

    assert api_error(excinfo) == "message_not_found"


def test_users_info(standin: SlackStandin, client: WebClient):
    standin.add_user("U0000000002", "Grace Hopper", "grace@example.com")

    user = client.users_info(user="U0000000002")["user"]

    assert user["profile"]["real_name"] == "Grace Hopper"
    assert user["profile"]["display_name"] == "Grace Hopper"
    assert user["profile"]["email"] == "grace@example.com"
    with pytest.raises(SlackApiError) as excinfo:
        client.users_info(user="U9999999999")
    assert api_error(excinfo) == "user_not_found"


def test_dm_by_user_id(standin: SlackStandin, client: WebClient):
    opened = client.conversations_open(users=ADA)["channel"]["id"]
    posted = client.chat_postMessage(channel=ADA, text="Your allocation is ready")

    assert opened.startswith("D")
    assert posted["channel"] == opened
    assert [m.text for m in standin.messages(ADA)] == ["Your allocation is ready"]
    assert standin.messages(opened) == standin.messages(ADA)


def test_form_encoded_methods(standin: SlackStandin):
    url = standin.api_url + "chat.postMessage"
    blocks = [{"type": "divider"}]
    fields = {"token": BOT_TOKEN, "channel": CHANNEL, "text": "form"}

    answer = post_form(url, {**fields, "blocks": json.dumps(blocks)})
    ephemeral = post_form(
        standin.api_url + "chat.postEphemeral",
        {"token": BOT_TOKEN, "channel": CHANNEL, "user": ADA, "text": "only you"},
    )

    assert answer["ok"], answer
    assert answer["message"]["blocks"] == blocks
    assert ephemeral["ok"], ephemeral
    assert re.fullmatch(r"\d+\.\d{6}", ephemeral["message_ts"])
    assert "token" not in standin.calls("chat.postMessage")[0].args


def test_form_encoded_through_web_client(standin: SlackStandin, client: WebClient):
    # api_call with params sends a form-encoded body, as slack-sdk does for most
    # methods; the token travels in the Authorization header.
    response = client.api_call(
        "chat.postMessage", params={"channel": CHANNEL, "text": "via form"}
    )

    assert response["ok"]
    assert standin.messages(CHANNEL)[0].text == "via form"


def test_missing_and_wrong_token(standin: SlackStandin):
    missing = post_form(standin.api_url + "auth.test", {})
    wrong = WebClient(token="xoxb-wrong", base_url=standin.api_url)

    assert missing == {"ok": False, "error": "not_authed"}
    with pytest.raises(SlackApiError) as excinfo:
        wrong.auth_test()
    assert api_error(excinfo) == "invalid_auth"


def test_auth_test(client: WebClient):
    response = client.auth_test()

    assert response["user_id"] == "UBOT00001"
    assert response["team_id"] == "T0000000001"
    assert response["bot_id"]
    assert response.headers["x-oauth-scopes"]


def test_not_in_channel_and_not_found(standin: SlackStandin, client: WebClient):
    standin.add_channel("C0000000002", "#private", bot_is_member=False)
    cases = {
        "C0000000002": "not_in_channel",
        "C0000009999": "channel_not_found",
        "D0000009999": "channel_not_found",
    }

    for channel, expected in cases.items():
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel=channel, text="x")
        assert api_error(excinfo) == expected, channel


def test_unknown_method(client: WebClient):
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("reactions.add", params={"name": "rocket"})

    assert api_error(excinfo) == "unknown_method"


def test_fail_next_counts_down(standin: SlackStandin, client: WebClient):
    standin.fail_next("chat.postMessage", "fatal_error", count=2)

    for _ in range(2):
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel=CHANNEL, text="x")
        assert api_error(excinfo) == "fatal_error"
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"]
    assert [c.ok for c in standin.calls("chat.postMessage")] == [False, False, True]


def test_ratelimited_answers_429(standin: SlackStandin, client: WebClient):
    standin.fail_next("chat.postMessage", "ratelimited")

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x")

    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response.headers["Retry-After"] == "1"
    assert api_error(excinfo) == "ratelimited"


def test_ratelimited_retried_by_sdk_handler(standin: SlackStandin):
    # Waits the one second that Retry-After requests.
    client = WebClient(
        token=BOT_TOKEN,
        base_url=standin.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    standin.fail_next("chat.postMessage", "ratelimited")

    response = client.chat_postMessage(channel=CHANNEL, text="x")

    assert response["ok"]
    assert [c.status for c in standin.calls("chat.postMessage")] == [429, 200]


# Modals


def test_views_open_trigger_rules(standin: SlackStandin, client: WebClient):
    standin.expire_trigger("1.2.expired")
    trigger_id = standin.issue_trigger(ADA, CHANNEL)

    opened = client.views_open(trigger_id=trigger_id, view=MODAL)["view"]
    cases = {
        "1.2.expired": "expired_trigger_id",
        trigger_id: "exchanged_trigger_id",
        "1.2.unknown": "invalid_trigger_id",
    }

    assert opened["id"].startswith("V")
    assert opened["callback_id"] == "allocate_form"
    for trigger, expected in cases.items():
        with pytest.raises(SlackApiError) as excinfo:
            client.views_open(trigger_id=trigger, view=MODAL)
        assert api_error(excinfo) == expected, trigger


def test_views_update_and_push(standin: SlackStandin, client: WebClient):
    opened = client.views_open(trigger_id=standin.issue_trigger(), view=MODAL)["view"]
    changed = {**MODAL, "private_metadata": "changed"}

    updated = client.views_update(view_id=opened["id"], view=changed)["view"]
    pushed = client.views_push(trigger_id=standin.issue_trigger(), view=MODAL)

    assert updated["id"] == opened["id"]
    assert standin.view(opened["id"])["private_metadata"] == "changed"
    assert pushed["ok"]
    with pytest.raises(SlackApiError) as excinfo:
        client.views_update(view_id=opened["id"], hash="stale", view=MODAL)
    assert api_error(excinfo) == "hash_conflict"


# Recording and subscribers


def test_wait_for_call_from_thread(standin: SlackStandin, client: WebClient):
    poster = threading.Thread(
        target=client.chat_postMessage, kwargs={"channel": CHANNEL, "text": "late"}
    )
    poster.start()

    call = standin.wait_for(lambda c: c.args.get("text") == "late", timeout=10)
    poster.join()

    assert call.method == "chat.postMessage"
    assert call.ok


def test_wait_for_timeout_lists_calls(standin: SlackStandin, client: WebClient):
    client.chat_postMessage(channel=CHANNEL, text="first")

    with pytest.raises(TimeoutError) as excinfo:
        standin.wait_for(lambda c: c.method == "views.open", timeout=0.05)

    message = str(excinfo.value)
    assert "No recorded Slack call matched within 0.05 s" in message
    assert "chat.postMessage ok channel='C0000000001'" in message
    assert "text='first'" in message


def test_subscriber_errors_are_isolated(standin: SlackStandin, client: WebClient):
    events: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("renderer failed")

    standin.subscribe(broken)
    unsubscribe = standin.subscribe(events.append)
    response = client.chat_postMessage(channel=CHANNEL, text="hello")
    client.chat_postEphemeral(channel=CHANNEL, user=ADA, text="psst")
    unsubscribe()
    client.chat_postMessage(channel=CHANNEL, text="unseen")

    assert response["ok"]
    assert [e.kind for e in events] == [
        EventKind.MESSAGE_POSTED,
        EventKind.EPHEMERAL_POSTED,
    ]
    assert events[0].ts == response["ts"]
    assert events[1].user == ADA
    assert events[1].text == "psst"


# Requests to the bot


def test_send_command_is_signed(standin: SlackStandin, receiver: Receiver):
    receiver.reply_body = b'{"text": "Allocating"}'

    result = standin.send_command("t3.2xlarge 1")

    assert result.status == 200
    assert result.json == {"text": "Allocating"}
    assert receiver.requests[-1]["valid"]
    form = receiver.last_form()
    assert form["command"] == "/allocate"
    assert form["text"] == "t3.2xlarge 1"
    assert form["user_id"] == ADA
    assert form["user_name"] == "ada"
    assert form["channel_id"] == CHANNEL
    assert form["channel_name"] == "general"
    assert form["team_id"] == "T0000000001"
    assert form["response_url"] == result.response_url
    assert form["trigger_id"] == result.trigger_id
    assert result.response_url.startswith(standin.url + "/response/")


def test_send_command_retry_headers(standin: SlackStandin, receiver: Receiver):
    standin.send_command("t3.micro 1", retry_num=1, retry_reason="http_timeout")

    headers = {k.lower(): v for k, v in receiver.requests[-1]["headers"].items()}
    assert headers["x-slack-retry-num"] == "1"
    assert headers["x-slack-retry-reason"] == "http_timeout"
    assert receiver.requests[-1]["valid"]


def test_stale_and_forged_signatures(standin: SlackStandin, receiver: Receiver):
    body = b"command=%2Fallocate&text=t3.micro+1"
    stale = int(time.time()) - 600
    stale_headers = {
        "X-Slack-Request-Timestamp": str(stale),
        "X-Slack-Signature": standin.sign(body, stale),
    }

    stale_result = standin.send_signed(body, headers=stale_headers)
    forged_result = standin.send_signed(body, headers={"X-Slack-Signature": "v0=00"})
    fresh_result = standin.send_signed(body)

    assert stale_result.status == 401
    assert forged_result.status == 401
    assert fresh_result.status == 200


def test_response_url_records_and_notifies(standin: SlackStandin):
    events: list[Event] = []
    standin.subscribe(events.append)
    result = standin.send_command("t3.micro 1", channel_id="D0000000999")
    webhook = WebhookClient(result.response_url)

    answer = webhook.send(text="Allocated", response_type="in_channel")

    assert answer.status_code == 200
    call = standin.wait_for(lambda c: c.method == "response_url", timeout=1)
    assert call.response_url == result.response_url
    assert call.args["text"] == "Allocated"
    assert events[-1].kind == EventKind.RESPONSE_URL_POSTED
    assert events[-1].channel == "D0000000999"
    assert events[-1].response_type == "in_channel"


def test_response_url_allows_five_posts(standin: SlackStandin):
    webhook = WebhookClient(standin.send_command("t3.micro 1").response_url)

    statuses = [webhook.send(text=f"update {n}").status_code for n in range(6)]

    assert statuses == [200, 200, 200, 200, 200, 404]
    assert standin.calls("response_url")[-1].response["error"] == "used_url"


def test_view_submission_state(
    standin: SlackStandin, client: WebClient, receiver: Receiver
):
    trigger_id = standin.send_command("").trigger_id
    view = client.views_open(trigger_id=trigger_id, view=MODAL)["view"]

    result = standin.send_view_submission(
        view["id"], {"instance_type": "t3.2xlarge", "quantity": 2}
    )

    assert result.status == 200
    assert receiver.requests[-1]["valid"]
    payload = json.loads(receiver.last_form()["payload"])
    assert payload["type"] == "view_submission"
    assert payload["user"]["id"] == ADA
    assert payload["trigger_id"] == result.trigger_id
    assert payload["view"]["id"] == view["id"]
    assert payload["view"]["callback_id"] == "allocate_form"
    assert payload["view"]["private_metadata"] == '{"origin": "command"}'
    assert payload["view"]["hash"] == view["hash"]
    values = payload["view"]["state"]["values"]
    assert values["instance_type"]["value"]["selected_option"]["value"] == "t3.2xlarge"
    assert values["quantity"]["value"] == {"type": "number_input", "value": "2"}
    assert values["purpose"]["value"] == {"type": "plain_text_input", "value": None}
    assert values["report_to"]["value"]["selected_conversation"] == CHANNEL
    [entry] = payload["response_urls"]
    assert entry["block_id"] == "report_to"
    assert entry["channel_id"] == CHANNEL
    assert entry["response_url"].startswith(standin.url + "/response/")


def test_view_submission_rejects_unknown_input(
    standin: SlackStandin, client: WebClient
):
    view = client.views_open(trigger_id=standin.issue_trigger(), view=MODAL)["view"]

    with pytest.raises(ValueError, match="no input block"):
        standin.send_view_submission(view, {"region": "us-east-1"})
    with pytest.raises(ValueError, match="no option with value 'x9.huge'"):
        standin.send_view_submission(view, {"instance_type": "x9.huge"})


def test_request_url_must_be_loopback():
    with pytest.raises(ValueError, match="Invalid request URL"):
        SlackStandin(BOT_TOKEN, SIGNING_SECRET, "http://example.com/slack/events")


def test_call_ok_reflects_response():
    assert Call("auth.test", {}, {"ok": True}).ok
    assert not Call("auth.test", {}, {"ok": False, "error": "invalid_auth"}).ok
