"""The allocation modal over HTTP: opening it, field errors, and submission."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.slack_harness import SlackBot, running_bot

CHANNEL = "C0000000001"


@pytest.fixture
def bot(settings, service):
    with running_bot(settings, service) as bot:
        yield bot


def launched_instances() -> list[dict[str, Any]]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    reservations = ec2.describe_instances()["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def open_modal(bot: SlackBot) -> dict[str, Any]:
    response = bot.standin.send_command("")
    assert response.status == 200
    return bot.calls("views.open")[-1].response["view"]


def submit(bot: SlackBot, view: dict[str, Any], **values: Any):
    fields = {"instance_type": "t3.micro", "count": "1"}
    fields.update(values)
    return bot.standin.send_view_submission(view["id"], fields)


def test_empty_command_opens_modal_with_fresh_trigger(bot):
    response = bot.standin.send_command("")
    opened = bot.calls("views.open")
    assert response.status == 200
    assert response.text == ""
    assert len(opened) == 1
    assert opened[0].args["trigger_id"] == response.trigger_id


def test_modal_lists_allowed_types_grouped_by_family(bot):
    bot.runtime.wait_prepared(timeout=30)
    view = open_modal(bot)
    select = view["blocks"][0]["element"]
    groups = {
        group["label"]["text"]: group["options"] for group in select["option_groups"]
    }
    labels = [option["text"]["text"] for option in groups["t3"]]
    assert "t3" in groups
    assert "t4g" in groups
    assert "t3.2xlarge · 8 vCPU · 32 GiB" in labels


def test_modal_expired_trigger_tells_user_to_retry(bot):
    trigger_id = "expired.trigger.1"
    bot.standin.expire_trigger(trigger_id)
    response = bot.standin.send_command("", trigger_id=trigger_id)
    assert response.status == 200
    assert "run `/allocate` again" in response.text


@pytest.mark.parametrize("count", ["0", "-1", "abc", "1e3", "", "99999"])
def test_modal_bad_count_is_shown_under_field(bot, count):
    view = open_modal(bot)
    response = submit(bot, view, count=count)
    bot.settle()
    body = response.json
    assert body["response_action"] == "errors"
    assert set(body["errors"]) == {"count"}
    assert launched_instances() == []


def test_modal_missing_type_is_shown_under_field(bot):
    view = open_modal(bot)
    response = bot.standin.send_view_submission(view["id"], {"count": "1"})
    bot.settle()
    assert response.json["response_action"] == "errors"
    assert "instance_type" in response.json["errors"]
    assert launched_instances() == []


def test_modal_submission_allocates_and_threads(bot):
    view = open_modal(bot)
    response = submit(bot, view, instance_type="t3.2xlarge", count="2")
    bot.settle()
    posts = bot.posts()
    first_ts = bot.calls("chat.postMessage")[0].response["ts"]
    assert response.status == 200
    assert response.text == ""
    assert posts[0]["channel"] == CHANNEL
    assert all(post["thread_ts"] == first_ts for post in posts[1:])
    assert len(launched_instances()) == 2


def test_modal_double_submission_launches_once(bot):
    view = open_modal(bot)
    submit(bot, view)
    submit(bot, view)
    bot.settle()
    assert len(launched_instances()) == 1


def test_modal_posts_in_chosen_conversation(bot):
    bot.standin.add_channel("C0000000003", "#builds")
    view = open_modal(bot)
    submit(bot, view, destination="C0000000003")
    bot.settle()
    assert bot.posts()[0]["channel"] == "C0000000003"


@pytest.mark.parametrize(
    "purpose",
    ["<!channel> deploy now", "<!here> please", "cc <@U0123ABCD>", "R&D <prod>"],
)
def test_modal_purpose_is_shown_as_plain_text(bot, purpose):
    view = open_modal(bot)
    submit(bot, view, purpose=purpose)
    bot.settle()
    first = bot.posts()[0]
    shown = str(first["blocks"])
    escaped = purpose.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in shown
    assert "<!channel>" not in shown
    assert "<!here>" not in shown
    assert "<@U0123ABCD>" not in shown
