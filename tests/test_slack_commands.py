"""/allocate over HTTP: signed by the stand-in, served by the production app."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import boto3
import pytest

from bot import aws
from bot.models import AllocationState
from tests.slack_harness import SlackBot, running_bot

CHANNEL = "C0000000001"
USER = "U0000000001"


@pytest.fixture
def bot(settings, service):
    with running_bot(settings, service) as bot:
        yield bot


def instances(**filters: str) -> list[dict[str, Any]]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    api_filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in filters.items()]
    reservations = ec2.describe_instances(Filters=api_filters)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def image_architecture(image_id: str) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]["Architecture"]


def allocation_id_from(bot: SlackBot) -> str:
    first = bot.posts()[0]
    return first["text"].split()[1].rstrip(":")


def test_command_acknowledges_with_plan(bot):
    response = bot.standin.send_command("t3.2xlarge 1")
    bot.settle()
    assert response.status == 200
    assert "Allocating 1 × `t3.2xlarge`" in response.text


def test_command_posts_allocation_then_thread_replies(bot):
    bot.standin.send_command("t3.2xlarge 1")
    bot.settle()
    posts = bot.posts()
    first, replies = posts[0], posts[1:]
    first_ts = bot.calls("chat.postMessage")[0].response["ts"]
    assert first["channel"] == CHANNEL
    assert first.get("thread_ts") is None
    assert "alloc-" in first["text"]
    assert len(replies) == 2
    assert all(reply["thread_ts"] == first_ts for reply in replies)
    assert "Launched" in replies[0]["text"]
    assert "running" in replies[1]["text"]


def test_command_running_reply_lists_instance_details(bot):
    bot.standin.send_command("t3.2xlarge 1")
    bot.settle()
    launched = instances()
    running_reply = bot.posts()[-1]["text"]
    assert len(launched) == 1
    assert launched[0]["InstanceId"] in running_reply
    assert launched[0]["Placement"]["AvailabilityZone"] in running_reply
    assert launched[0]["PrivateIpAddress"] in running_reply


def test_command_updates_first_message_to_final_state(bot):
    bot.standin.send_command("t3.2xlarge 1")
    bot.settle()
    first_ts = bot.calls("chat.postMessage")[0].response["ts"]
    updates = [call.args for call in bot.calls("chat.update")]
    assert updates
    assert all(update["ts"] == first_ts for update in updates)
    assert "running" in updates[-1]["text"]


def test_command_launches_requested_type_count_and_tags(bot):
    bot.standin.send_command("t3.2xlarge 1")
    bot.settle()
    allocation_id = allocation_id_from(bot)
    launched = instances(AllocationId=allocation_id)
    tags = {tag["Key"]: tag["Value"] for tag in launched[0]["Tags"]}
    assert len(launched) == 1
    assert launched[0]["InstanceType"] == "t3.2xlarge"
    assert tags["RequestedBy"] == USER
    assert tags["ManagedBy"] == "ec2-allocator"
    assert image_architecture(launched[0]["ImageId"]) == "x86_64"


def test_command_arm_type_gets_arm64_ami(bot):
    bot.standin.send_command("t4g.micro 2")
    bot.settle()
    launched = instances(AllocationId=allocation_id_from(bot))
    assert len(launched) == 2
    assert {i["InstanceType"] for i in launched} == {"t4g.micro"}
    assert image_architecture(launched[0]["ImageId"]) == "arm64"


def test_command_count_defaults_to_one(bot):
    bot.standin.send_command("t3.micro")
    bot.settle()
    assert len(instances()) == 1


def test_command_records_requester_and_thread(bot):
    bot.standin.send_command("t3.micro 1")
    bot.settle()
    allocation = bot.service.get(allocation_id_from(bot))
    first_ts = bot.calls("chat.postMessage")[0].response["ts"]
    assert allocation.state is AllocationState.RUNNING
    assert allocation.requester.user_id == USER
    assert allocation.requester.name == "Ada Lovelace"
    assert allocation.requester.email == "ada@example.com"
    assert allocation.report_to is not None
    assert allocation.report_to.channel_id == CHANNEL
    assert allocation.report_to.thread_ts == first_ts


@pytest.mark.parametrize("text", ["help", "HELP", "--help"])
def test_command_help_answers_usage(bot, text):
    response = bot.standin.send_command(text)
    bot.settle()
    assert "Usage" in response.text
    assert instances() == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("t3.micro 0", "at least 1"),
        ("t3.micro -1", "not a whole number"),
        ("t3.micro abc", "not a whole number"),
        ("t3.micro 1e3", "not a whole number"),
        ("t3.micro 99999", "at most 10"),
        ("t3.micro 1.5", "not a whole number"),
        ("t3.micro 1 please", "unexpected words"),
        ("t3.mega 1", "not one of the instance types"),
        ("rm -rf /", "not an instance type name"),
        ("<!channel> 1", "not an instance type name"),
    ],
)
def test_command_rejects_bad_input_without_launching(bot, text, problem):
    response = bot.standin.send_command(text)
    bot.settle()
    assert problem in response.text
    assert "Usage" in response.text
    assert instances() == []
    assert bot.posts() == []


def test_command_rejection_escapes_user_text(bot):
    response = bot.standin.send_command("<!here>.x 1")
    bot.settle()
    assert "<!here>" not in response.text


def test_command_retry_launches_once_and_posts_once(bot):
    first = bot.standin.send_command("t3.micro 1")
    retry = bot.standin.send_command(
        "t3.micro 1",
        trigger_id=first.trigger_id,
        response_url=first.response_url,
        extra_headers={
            "x-slack-retry-num": "1",
            "x-slack-retry-reason": "http_timeout",
        },
    )
    bot.settle()
    top_level = [post for post in bot.posts() if not post.get("thread_ts")]
    assert first.status == 200
    assert retry.status == 200
    assert len(instances()) == 1
    assert len(top_level) == 1


def test_command_concurrent_retries_launch_once(bot):
    first = bot.standin.send_command("t3.micro 1")
    barrier = threading.Barrier(4)

    def retry() -> None:
        barrier.wait()
        bot.standin.send_command(
            "t3.micro 1",
            trigger_id=first.trigger_id,
            response_url=first.response_url,
            retry_num=1,
            retry_reason="http_timeout",
        )

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bot.settle()
    assert len(instances()) == 1


def test_command_ack_does_not_wait_for_aws_clients(settings, service, monkeypatch):
    """Building AWS clients is slow in a fresh process; the ack must not wait."""
    released = threading.Event()
    real_make_client = aws.make_client

    def slow_make_client(*args: Any, **kwargs: Any) -> Any:
        released.wait(timeout=30)
        return real_make_client(*args, **kwargs)

    monkeypatch.setattr("bot.provisioning.make_client", slow_make_client)
    with running_bot(settings, service) as bot:
        response = bot.standin.send_command("t3.micro 1")
        acknowledged_before_aws = not released.is_set()
        released.set()
        bot.settle()
    assert response.status == 200
    assert acknowledged_before_aws
    assert len(instances()) == 1


def test_command_result_arrives_after_slow_launch(bot):
    launching = threading.Event()
    release = threading.Event()

    def slow_launch(**_: Any) -> None:
        launching.set()
        release.wait(timeout=30)

    bot.service.provisioner.ec2.meta.events.register(
        "before-call.ec2.RunInstances", slow_launch
    )
    response = bot.standin.send_command("t3.micro 1")
    assert "Allocating" in response.text
    assert launching.wait(timeout=10)
    assert instances() == []
    release.set()
    bot.settle()
    assert "running" in bot.posts()[-1]["text"]


def test_command_bad_signature_is_rejected(bot):
    body = b"command=%2Fallocate&text=t3.micro+1&user_id=U0000000001"
    timestamp = str(int(time.time()))
    response = bot.standin.send_signed(
        body,
        headers={
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": "v0=" + "0" * 64,
        },
    )
    bot.settle()
    assert response.status == 401
    assert instances() == []


def test_command_stale_timestamp_is_rejected(bot):
    body = b"command=%2Fallocate&text=t3.micro+1&user_id=U0000000001"
    stale = str(int(time.time()) - 600)
    response = bot.standin.send_signed(
        body,
        headers={
            "X-Slack-Request-Timestamp": stale,
            "X-Slack-Signature": bot.standin.sign(body, stale),
        },
    )
    bot.settle()
    assert response.status == 401
    assert instances() == []


def test_command_logs_allocation_without_secrets(bot, caplog):
    caplog.set_level(logging.INFO)
    bot.standin.send_command("t3.micro 1")
    bot.settle()
    allocation_id = allocation_id_from(bot)
    assert allocation_id in caplog.text
    assert "ada@example.com" not in caplog.text
    assert "xoxb-test-token" not in caplog.text
    assert "test-signing-secret" not in caplog.text


def test_following_does_not_starve_new_requests(settings, service, monkeypatch):
    """Allocations waiting for their instances leave room to record new ones."""
    release = threading.Event()
    real_describe = service.provisioner.describe

    def slow_describe(instance_ids):
        release.wait(timeout=30)
        return real_describe(instance_ids)

    monkeypatch.setattr(service.provisioner, "describe", slow_describe)
    with running_bot(settings, service) as bot:
        for _ in range(9):  # more than the harness's 8 launch workers
            bot.standin.send_command("t3.micro 1")
        try:
            posted = bot.standin.wait_for(
                lambda call: (
                    call.method == "chat.postMessage"
                    and call.ok
                    and len([c for c in bot.posts() if "Launched" in c["text"]]) == 9
                ),
                timeout=20,
            )
        finally:
            release.set()
        bot.settle()
    assert posted is not None
    assert len(instances()) == 9
