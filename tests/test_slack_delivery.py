"""Where allocation reports go when the bot cannot post in the conversation,
and how AWS failures reach the requester."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from slack_sdk import WebClient

from bot.models import AllocationState, Instance
from tests.slack_harness import running_bot

USER = "U0000000001"
OTHER_CHANNEL = "C0000000002"
OTHER_DM = "D0000000009"


@pytest.fixture
def bot(settings, service):
    with running_bot(settings, service) as bot:
        bot.standin.add_channel(OTHER_CHANNEL, "#private-team", bot_is_member=False)
        yield bot


def launched_ids() -> list[str]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    reservations = ec2.describe_instances()["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


def response_url_texts(bot) -> list[str]:
    return [call.args.get("text") or "" for call in bot.calls("response_url")]


def test_dm_with_someone_else_reports_to_requester(bot):
    bot.standin.send_command(
        "t3.micro 1", channel_id=OTHER_DM, channel_name="directmessage"
    )
    bot.settle()
    posts = bot.posts()
    ids = launched_ids()
    assert len(ids) == 1
    assert posts[0]["channel"] == USER
    assert ids[0] in posts[-1]["text"]


def test_unjoined_channel_reports_by_dm(bot):
    bot.standin.send_command("t3.micro 1", channel_id=OTHER_CHANNEL)
    bot.settle()
    first = bot.posts()[0]
    failed = [c for c in bot.calls("chat.postMessage") if not c.ok]
    assert failed[0].response["error"] == "not_in_channel"
    assert first["channel"] == USER
    assert "/invite" in str(first["blocks"])
    assert launched_ids()[0] in bot.posts()[-1]["text"]


def test_dm_replies_thread_under_dm_message(bot):
    bot.standin.send_command("t3.micro 1", channel_id=OTHER_CHANNEL)
    bot.settle()
    calls = [c for c in bot.calls("chat.postMessage") if c.ok]
    first_ts = calls[0].response["ts"]
    dm_channel = calls[0].response["channel"]
    assert all(c.args["thread_ts"] == first_ts for c in calls[1:])
    assert all(c.args["channel"] == dm_channel for c in calls[1:])


def test_channel_not_found_reports_by_dm(bot):
    bot.standin.fail_next("chat.postMessage", "channel_not_found")
    bot.standin.send_command("t3.micro 1")
    bot.settle()
    assert bot.posts()[0]["channel"] == USER
    assert launched_ids()[0] in bot.posts()[-1]["text"]


def test_failed_dm_uses_response_url(bot):
    bot.standin.fail_next("chat.postMessage", "not_in_channel")
    bot.standin.fail_next("chat.postMessage", "messages_tab_disabled")
    bot.standin.send_command("t3.micro 1", channel_id=OTHER_CHANNEL)
    bot.settle()
    texts = response_url_texts(bot)
    assert any("alloc-" in text for text in texts)
    assert any(launched_ids()[0] in text for text in texts)


def test_record_keeps_where_reports_went(bot):
    bot.standin.send_command("t3.micro 1", channel_id=OTHER_CHANNEL)
    bot.settle()
    first = bot.calls("chat.postMessage")[-1]
    allocation_id = bot.posts()[0]["text"].split()[1].rstrip(":")
    record = bot.service.get(allocation_id)
    assert record.report_to is not None
    assert record.report_to.requested_channel_id == OTHER_CHANNEL
    assert record.report_to.channel_id == first.response["channel"]


def fail_run_instances(bot, code: str, message: str, status: int = 400) -> None:
    def reply(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Error": {"Code": code, "Message": message}}
        error["ResponseMetadata"] = {"HTTPStatusCode": status}
        return AWSResponse("https://ec2.invalid", status, {}, None), error

    bot.service.provisioner.ec2.meta.events.register(
        "before-call.ec2.RunInstances", reply
    )


def test_capacity_error_reply_names_zone(bot):
    fail_run_instances(
        bot,
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient m5.8xlarge capacity.",
        status=500,
    )
    bot.standin.send_command("m5.8xlarge 4")
    bot.settle()
    reply = bot.posts()[-1]
    record = bot.service.get(bot.posts()[0]["text"].split()[1].rstrip(":"))
    assert reply.get("thread_ts")
    assert "4 × m5.8xlarge" in reply["text"]
    assert "us-east-1" in reply["text"]
    assert "another instance type" in reply["text"]
    assert record.state is AllocationState.FAILED
    assert record.failure is not None
    assert record.failure.code == "InsufficientInstanceCapacity"


def test_vcpu_limit_reply_cites_limit_and_quota(bot):
    fail_run_instances(
        bot,
        "VcpuLimitExceeded",
        "You have requested more vCPU capacity than your current vCPU limit "
        "of 32 allows for the instance bucket that the specified instance "
        "type belongs to.",
    )
    bot.standin.send_command("c5.4xlarge 3")
    bot.settle()
    reply = bot.posts()[-1]["text"]
    assert "vCPU limit of 32" in reply
    assert "Service Quotas" in reply
    assert launched_ids() == []


def test_first_message_shows_failed_state(bot):
    fail_run_instances(bot, "Unsupported", "The requested configuration is unsupported")
    bot.standin.send_command("t3.micro 1")
    bot.settle()
    last_update = bot.calls("chat.update")[-1].args
    assert "failed" in last_update["text"]


def test_instance_dying_on_start_is_reported_in_thread(bot, monkeypatch):
    states = iter(["pending", "terminated"])

    def describe(instance_ids):
        state = next(states, "terminated")
        reason = "Server.InternalError: Internal error on launch"
        return [
            Instance(
                instance_id=i,
                state=state,
                state_reason=reason if state == "terminated" else None,
            )
            for i in instance_ids
        ]

    monkeypatch.setattr(bot.service.provisioner, "describe", describe)
    bot.standin.send_command("t3.micro 1")
    bot.settle()
    reply = bot.posts()[-1]["text"]
    assert "failed" in reply
    assert "terminated" in reply
    assert "Server.InternalError" in reply


def test_rejection_after_ack_is_ephemeral(bot, monkeypatch):
    """A type allowed by policy but unknown to EC2 is reported only to the requester."""
    monkeypatch.setattr(
        bot.service.policy,
        "allowed_instance_types",
        (*bot.service.policy.allowed_instance_types, "t3.imaginary"),
    )
    bot.standin.send_command("t3.imaginary 1")
    bot.settle()
    texts = response_url_texts(bot)
    assert bot.posts() == []
    assert any("t3.imaginary" in text for text in texts)
    assert launched_ids() == []


def test_post_timeout_falls_back_to_dm(bot, monkeypatch):
    """slack_sdk lets a timeout through as TimeoutError, not as a Slack error."""
    original = WebClient.chat_postMessage
    timed_out: list[str] = []

    def post(self, **kwargs):
        if kwargs.get("channel") == "C0000000001" and not timed_out:
            timed_out.append(kwargs["channel"])
            raise TimeoutError("The read operation timed out")
        return original(self, **kwargs)

    monkeypatch.setattr(WebClient, "chat_postMessage", post)
    bot.standin.send_command("t3.micro 1")
    bot.settle()
    ids = launched_ids()
    assert timed_out == ["C0000000001"]
    assert bot.posts()[0]["channel"] == USER
    assert ids[0] in bot.posts()[-1]["text"]


def test_rejected_response_url_falls_back_to_ephemeral(bot, monkeypatch):
    """Bolt's respond returns a 404 response instead of raising."""
    monkeypatch.setattr(
        bot.service.policy,
        "allowed_instance_types",
        (*bot.service.policy.allowed_instance_types, "t3.imaginary"),
    )
    bot.standin.send_command(
        "t3.imaginary 1", response_url=bot.standin.url + "/response/unknown"
    )
    bot.settle()
    ephemeral = [c.args.get("text") or "" for c in bot.calls("chat.postEphemeral")]
    assert any("t3.imaginary" in text for text in ephemeral)


def test_command_without_trigger_id_is_refused(bot):
    body = (
        b"command=%2Fallocate&text=t3.micro+1&user_id=U0000000001"
        b"&channel_id=C0000000001&team_id=T0000000001"
    )
    response = bot.standin.send_signed(body)
    bot.settle()
    assert response.status == 200
    assert "nothing was launched" in response.text
    assert launched_ids() == []


@pytest.mark.parametrize("timestamp", ["abc", "", "1e9", " 1"])
def test_malformed_timestamp_is_401(bot, timestamp):
    body = b"command=%2Fallocate&text=t3.micro+1"
    response = bot.standin.send_signed(
        body,
        headers={"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=0"},
    )
    assert response.status == 401


def test_dm_hint_does_not_suggest_invite(bot):
    bot.standin.send_command(
        "t3.micro 1", channel_id=OTHER_DM, channel_name="directmessage"
    )
    bot.settle()
    first = str(bot.posts()[0]["blocks"])
    assert "direct message between other people" in first
    assert "/invite" not in first


def test_timeout_failure_lists_instances(settings, service, monkeypatch):
    settings = settings.model_copy(update={"status_timeout_seconds": 0.05})
    service.settings = settings

    def describe(instance_ids):
        return [Instance(instance_id=i, state="pending") for i in instance_ids]

    monkeypatch.setattr(service.provisioner, "describe", describe)
    with running_bot(settings, service) as bot:
        bot.standin.send_command("t3.micro 1")
        bot.settle()
        reply = bot.posts()[-1]["text"]
        ids = launched_ids()
    assert "did not reach running" in reply
    assert f"`{ids[0]}` pending" in reply
