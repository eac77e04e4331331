"""Tests of `python -m bot sandbox`: piped runs of the whole product, and its rendering.

The piped runs start moto, the Slack stand-in and the bot on 127.0.0.1 in
this process, exactly as the command does, and read the terminal's output.
Messages from concurrent allocation threads may arrive in any order, so the
checks look for whole events in the output, never for their order.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.sandbox.console import Console, ConsoleLogHandler, printable
from bot.sandbox.form import Field, FormPrompter
from bot.sandbox.main import run_sandbox
from bot.sandbox.rendering import ChannelRenderer
from bot.sandbox.slack_text import (
    Conversation,
    Directory,
    blocks_to_lines,
    mrkdwn_to_text,
)
from bot.sandbox.slack_workspace import BOT_USER_ID, Event, EventKind

REPO_ROOT = Path(__file__).resolve().parent.parent
ALLOCATION_ID = r"alloc-[0-9a-f]{16}"
# A thread reply that lists running instances, one "• `i-…` · zone · private IP" each.
RUNNING_REPLY = re.compile(
    r"  ↳ EC2 Allocator · [0-9:]+ · "
    r"in the thread of (?P<allocation>alloc-[0-9a-f]{16})\n"
    r"    ✅ (?:All instances are|The instance is) running:\n"
    r"(?P<instances>(?:    • .*\n)+)"
)
INSTANCE_LINE = re.compile(
    r"• `(?P<id>i-[0-9a-f]+)` · (?P<zone>us-east-1[a-z]) · "
    r"private (?P<ip>\d+\.\d+\.\d+\.\d+)"
)


def run_piped(text: str) -> tuple[int, str]:
    """Run the sandbox with `text` as piped input; return the status and output."""
    stdout = io.StringIO()
    status = run_sandbox([], stdin=io.StringIO(text), stdout=stdout)
    return status, stdout.getvalue()


def running_instances(output: str) -> dict[str, list[re.Match[str]]]:
    """Return the instance lines of each reply that lists running instances."""
    found = {}
    for reply in RUNNING_REPLY.finditer(output):
        lines = reply.group("instances").splitlines()
        found[reply.group("allocation")] = [
            INSTANCE_LINE.search(line) for line in lines
        ]
    return found


# Piped runs of the whole sandbox


def test_command_reports_running_instance() -> None:
    status, output = run_piped("/allocate t3.2xlarge 1\n")

    assert status == 0, output
    assert "only visible to you\n  ⏳ Allocating 1 × `t3.2xlarge`…" in output
    first_message = re.search(rf"Allocation: `({ALLOCATION_ID})`", output)
    assert first_message, output
    allocation_id = first_message.group(1)
    assert "Instance type: `t3.2xlarge`" in output
    assert "Requested by: @Ada Lovelace" in output
    instances = running_instances(output)
    assert list(instances) == [allocation_id], output
    [line] = instances[allocation_id]
    assert line is not None, output
    assert line.group("zone").startswith("us-east-1")
    assert f"(edited) · {allocation_id}\n  State: 🟢 Running" in output
    assert output.rstrip().endswith(f"1 allocation settled: {allocation_id} running")


def test_command_with_count_two() -> None:
    status, output = run_piped("/allocate t4g.micro 2\n")

    assert status == 0, output
    assert "Instance type: `t4g.micro`" in output
    assert "Count: 2" in output
    [lines] = running_instances(output).values()
    assert len(lines) == 2, output
    assert all(line is not None for line in lines), output
    assert len({line.group("id") for line in lines}) == 2


def test_unknown_instance_type_prints_usage() -> None:
    status, output = run_piped("/allocate nonsense-type 1\n")

    assert status == 0, output
    assert "only visible to you" in output
    assert "'nonsense-type' is not an instance type name" in output
    assert "*Usage:* `/allocate INSTANCE_TYPE [COUNT]`" in output
    assert "Allocation:" not in output
    assert output.rstrip().endswith("No allocations were recorded.")


def test_modal_reasks_invalid_count() -> None:
    # Fields in order: instance type, count, purpose, conversation; then the
    # count again after the bot rejects 0.
    status, output = run_piped("/allocate\nt3.micro\n0\nload test\n\n2\n")

    assert status == 0, output
    assert 'opened the form "Allocate EC2"' in output
    assert "  Instance type: t3.micro · 2 vCPU · 1 GiB\n" in output
    assert "  Count: 0\n" in output
    assert "  Post updates in: #general (default)\n" in output
    assert "  ⚠ Count: Must be at least 1.\n  Count: 2\n" in output
    assert "Form submitted." in output
    assert "  Instance type: `t3.micro`\n  Count: 2\n" in output
    assert "  Region: us-east-1\n  Purpose: load test\n" in output
    [lines] = running_instances(output).values()
    assert len(lines) == 2, output
    assert re.search(rf"1 allocation settled: {ALLOCATION_ID} running", output)


def test_modal_cancel_and_unknown_option() -> None:
    # The first form is cancelled; the second gets an option the form does
    # not offer, then option 6, then blank lines that keep the defaults.
    status, output = run_piped("/allocate\ncancel\n/allocate\nt9.huge\n6\n\n\n\n")

    assert status == 0, output
    assert "Form closed without submitting." in output
    assert "'t9.huge' is not one of the options" in output
    assert "  Instance type: t3.2xlarge · 8 vCPU · 32 GiB\n" in output
    assert "  Count: 1 (default)\n" in output
    assert "  Purpose: (blank)\n" in output
    assert "Instance type: `t3.2xlarge`" in output
    assert re.search(rf"1 allocation settled: {ALLOCATION_ID} running", output)


def test_conversations_without_bot_report_by_dm() -> None:
    status, output = run_piped(
        "channels\n"
        "channel #private-team\n"
        "/allocate t3.micro\n"
        "channel D0000000009\n"
        "/allocate t3.small\n"
    )

    assert status == 0, output
    assert "2) #private-team (C0000000002) · the bot is not a member" in output
    assert "You are now in DM with Grace Hopper." in output
    assert "DM from EC2 Allocator · EC2 Allocator" in output
    assert "I could not post in #private-team, so I am reporting here." in output
    assert "I cannot post in a direct message between other people" in output
    assert len(running_instances(output)) == 2, output
    assert re.search(rf"2 allocations settled: {ALLOCATION_ID} running, ", output)


def test_piped_run_banner_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "someone-real")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")

    status, output = run_piped("help\nquit\n/allocate t3.micro\n")

    assert status == 0, output
    first, second = output.splitlines()[:2]
    assert first.startswith("Sandbox running on 127.0.0.1: bot http://127.0.0.1:")
    assert re.search(r", JSON API http://127\.0\.0\.1:\d+/resources/allocate,", first)
    assert not re.search(r"[0-9a-f]{32}", first)  # the API token
    assert second == "Ada Lovelace in #general: help"
    assert "Ada Lovelace in #general> " not in output
    assert "Allocating" not in output  # quit ends the run before the last line
    assert os.environ["AWS_PROFILE"] == "someone-real"
    assert os.environ["HTTPS_PROXY"] == "http://proxy.invalid:3128"
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_allocation_id_in_purpose_not_counted() -> None:
    status, output = run_piped(
        "/allocate\nt3.micro\n1\nredo of alloc-1111111111111111\n\n"
    )

    assert status == 0, output
    assert "  Purpose: redo of alloc-1111111111111111\n" in output
    summary = output.rstrip().splitlines()[-1]
    assert re.fullmatch(rf"1 allocation settled: {ALLOCATION_ID} running", summary)
    assert "alloc-1111111111111111" not in summary


def test_control_characters_are_escaped() -> None:
    status, output = run_piped(
        "/allocate \x1b[2Jt3.micro\x1b]0;pwned\x07 1\n"
        "channel \x1b[31m#general\x7f\n"
        "/allocate\nt3.micro\n1\nred \x1b[31mtext\u009b2J\ncancel\n"
    )

    assert status == 0, output
    for control in ("\x1b", "\x07", "\x7f", "\x9b"):
        assert control not in output, repr(control)
    assert (
        "Ada Lovelace in #general: /allocate \\x1b[2Jt3.micro\\x1b]0;pwned\\x07 1\n"
        in output
    )
    assert "No conversation '\\x1b[31m#general\\x7f'" in output
    assert "  Purpose: red \\x1b[31mtext\\x9b2J\n" in output


def test_channel_without_name_prints_usage() -> None:
    status, output = run_piped("channel\n")

    assert status == 0, output
    assert "Usage: channel NAME, channel ID or channel NUMBER" in output
    assert "No conversation" not in output


def test_modal_blank_after_rejection_uses_default() -> None:
    # The bot rejects a count of 0, so a blank line then submits the default 1.
    status, output = run_piped("/allocate\nt3.micro\n0\n\n\n\n")

    assert status == 0, output
    assert "  ⚠ Count: Must be at least 1.\n  Count: 1 (default)\n" in output
    assert output.count("⚠ Count:") == 1, output
    assert "  Instance type: `t3.micro`\n  Count: 1\n" in output
    assert re.search(rf"1 allocation settled: {ALLOCATION_ID} running", output)


def test_invalid_log_level_exits_with_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOX_LOG_LEVEL", "chatty")

    status, output = run_piped("")

    assert status == 2
    assert output == ""
    assert "SANDBOX_LOG_LEVEL='CHATTY' is not a log level" in capsys.readouterr().err


def test_command_line_pipe_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "sandbox"],
        input="/allocate t3.2xlarge 1\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"1 allocation settled: {ALLOCATION_ID} running", result.stdout)
    assert "✅ The instance is running:" in result.stdout
    assert result.stderr == ""


def run_bot_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_sandbox_help_shows_its_options() -> None:
    result = run_bot_command("sandbox", "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m bot sandbox [-h] [--verbose]")
    assert "--verbose" in result.stdout
    assert "Sandbox running" not in result.stdout


def test_top_level_help_and_unknown_option() -> None:
    help_result = run_bot_command("--help")
    bogus_result = run_bot_command("--bogus")

    assert help_result.returncode == 0, help_result.stderr
    assert help_result.stdout.startswith("usage: python -m bot [-h]")
    assert "python -m bot sandbox --help" in help_result.stdout
    assert bogus_result.returncode == 2
    assert "unrecognized arguments: --bogus" in bogus_result.stderr


# Rendering of Slack text and events, without servers


@pytest.fixture
def directory() -> Directory:
    directory = Directory()
    directory.add_user("U0000000001", "Ada Lovelace")
    directory.add_conversation(Conversation("C0000000001", "#general", True))
    return directory


def test_mrkdwn_mentions_become_names(directory: Directory) -> None:
    text = "<@U0000000001> in <#C0000000001> and <!here>: <@U0000000099|bob> <#C9|old>"

    assert mrkdwn_to_text(text, directory) == (
        "@Ada Lovelace in #general and @here: @bob #old"
    )


def test_mrkdwn_links_escapes_and_emoji(directory: Directory) -> None:
    text = (
        ":white_check_mark: <https://example.com|docs> <mailto:a@example.com|mail> "
        "&lt;b&gt; &amp;amp; *bold* `code` :no_such_emoji: <!channel>"
    )

    assert mrkdwn_to_text(text, directory) == (
        "✅ docs (https://example.com) mail <b> &amp; *bold* `code` "
        ":no_such_emoji: @channel"
    )


def test_blocks_render_fields_and_context(directory: Directory) -> None:
    blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Hello <@U0000000001>"},
            "fields": [
                {"type": "mrkdwn", "text": "*State*\n:large_green_circle: Running"},
                {"type": "plain_text", "text": "no label"},
            ],
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "*Purpose:* a &amp; b"}],
        },
    ]

    assert blocks_to_lines(blocks, directory) == [
        "Hello @Ada Lovelace",
        "State: 🟢 Running",
        "no label",
        "Purpose: a & b",
    ]


def test_renderer_threads_edits_and_ephemeral(directory: Directory) -> None:
    rendered: list[list[str]] = []
    renderer = ChannelRenderer(directory, rendered.append)
    first = [
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Allocation*\n`alloc-0123456789abcdef`"},
                {"type": "mrkdwn", "text": "*State*\nRequested"},
            ],
        }
    ]
    edited = [
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Allocation*\n`alloc-0123456789abcdef`"},
                {"type": "mrkdwn", "text": "*State*\nRunning"},
            ],
        }
    ]
    channel, ts = "C0000000001", "1700000000.000100"

    renderer(
        Event(EventKind.MESSAGE_POSTED, channel, ts, None, BOT_USER_ID, "x", first)
    )
    renderer(
        Event(
            EventKind.MESSAGE_POSTED, channel, "1700000001.0", ts, BOT_USER_ID, "done"
        )
    )
    renderer(
        Event(EventKind.MESSAGE_UPDATED, channel, ts, None, BOT_USER_ID, "x", edited)
    )
    renderer(
        Event(EventKind.EPHEMERAL_POSTED, channel, user="U0000000001", text="psst")
    )
    renderer(
        Event(
            EventKind.MESSAGE_POSTED,
            "D0000000042",
            "1700000002.0",
            None,
            BOT_USER_ID,
            "hi",
        )
    )

    posted, reply, update, ephemeral, dm = rendered
    assert posted[0].startswith("#general · EC2 Allocator · ")
    assert posted[1:] == [
        "  Allocation: `alloc-0123456789abcdef`",
        "  State: Requested",
    ]
    assert reply[0].startswith("  ↳ EC2 Allocator · ")
    assert reply[0].endswith(" · in the thread of alloc-0123456789abcdef")
    assert reply[1:] == ["    done"]
    assert update[0].endswith("(edited) · alloc-0123456789abcdef")
    assert update[1:] == ["  State: Running"]
    assert ephemeral[0].endswith("· only visible to you")
    assert ephemeral[1:] == ["  psst"]
    assert dm[0].startswith("DM from EC2 Allocator · EC2 Allocator · ")
    assert renderer.allocation_ids == ["alloc-0123456789abcdef"]
    assert directory.conversation("D0000000042") is not None


def test_renderer_collects_only_allocation_messages(directory: Directory) -> None:
    renderer = ChannelRenderer(directory, lambda lines: None)
    channel, ts = "C0000000001", "1700000000.000100"

    def allocation_blocks(allocation_id: str, purpose: str) -> list[dict]:
        field = {"type": "mrkdwn", "text": f"*Allocation*\n`{allocation_id}`"}
        context = {"type": "mrkdwn", "text": f"*Purpose:* {purpose}"}
        return [
            {"type": "section", "fields": [field]},
            {"type": "context", "elements": [context]},
        ]

    own = allocation_blocks("alloc-0123456789abcdef", "redo of alloc-1111111111111111")
    renderer(Event(EventKind.MESSAGE_POSTED, channel, ts, None, BOT_USER_ID, "x", own))
    # A thread reply, a person's message and an ephemeral message that name IDs.
    reply = allocation_blocks("alloc-2222222222222222", "")
    renderer(
        Event(
            EventKind.MESSAGE_POSTED,
            channel,
            "1700000001.0",
            ts,
            BOT_USER_ID,
            "see alloc-3333333333333333",
            reply,
        )
    )
    typed = allocation_blocks("alloc-4444444444444444", "")
    renderer(
        Event(
            EventKind.MESSAGE_POSTED,
            channel,
            "1700000002.0",
            None,
            "U0000000001",
            "alloc-5555555555555555",
            typed,
        )
    )
    renderer(
        Event(
            EventKind.EPHEMERAL_POSTED,
            channel,
            user="U0000000001",
            text="alloc-6666666666666666",
        )
    )
    renderer(
        Event(
            EventKind.MESSAGE_POSTED,
            channel,
            "1700000003.0",
            None,
            BOT_USER_ID,
            "Allocation alloc-7777777777777777: 1 × t3.micro",
        )
    )

    assert renderer.allocation_ids == ["alloc-0123456789abcdef"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("a\x7fb", "a\\x7fb"),
        ("\u009b31m", "\\x9b31m"),
        ("\r\x00", "\\x0d\\x00"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("café ↳ ✅ \u00a0", "café ↳ ✅ \u00a0"),
    ],
)
def test_printable_escapes_control_characters(text: str, expected: str) -> None:
    assert printable(text) == expected


class TerminalOutput(io.StringIO):
    """Output that reports itself as a terminal."""

    def isatty(self) -> bool:
        return True


class LoggingInput(io.StringIO):
    """Input that logs a record while the console waits for a line."""

    def __init__(self, text: str, logger: logging.Logger):
        super().__init__(text)
        self.logger = logger

    def readline(self, size: int | None = -1) -> str:
        self.logger.error("boom \x1b[2J")
        return super().readline(size)


def test_console_log_record_above_prompt() -> None:
    output = TerminalOutput()
    logger = logging.getLogger("test_sandbox.console")
    console = Console(LoggingInput("typed\n", logger), output, interactive=True)
    handler = ConsoleLogHandler(console, output)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        line = console.read_line("prompt\x1b> ")
    finally:
        logger.removeHandler(handler)

    assert line == "typed"
    assert output.getvalue() == (
        "prompt\\x1b> \r\x1b[KERROR test_sandbox.console: boom \\x1b[2J\nprompt\\x1b> "
    )


def text_field(default: str | None, optional: bool = False) -> Field:
    return Field("count", "Count", "number_input", optional, default=default)


def test_form_blank_after_rejected_default() -> None:
    # The rejected value is the default, so a blank line repeats the prompt.
    output = io.StringIO()
    console = Console(io.StringIO("\n3\n"), output, interactive=False)
    prompter = FormPrompter(console)
    field = text_field(default="0")
    prompter.reject([field])

    prompter.ask([field])

    assert "  The bot rejected 0; type another value or cancel.\n" in output.getvalue()
    assert prompter.answers == {"count": "3"}


def test_form_blank_after_rejection_keeps_default() -> None:
    output = io.StringIO()
    console = Console(io.StringIO("\n"), output, interactive=False)
    prompter = FormPrompter(console)
    field = text_field(default="1")
    prompter.answers["count"] = "0"
    prompter.reject([field])

    prompter.ask([field])

    assert output.getvalue() == "  Count: 1 (default)\n"
    assert "count" not in prompter.answers  # the form submits its initial value


def test_form_blank_clears_rejected_optional() -> None:
    output = io.StringIO()
    console = Console(io.StringIO("\n"), output, interactive=False)
    prompter = FormPrompter(console)
    field = text_field(default=None, optional=True)
    prompter.answers["count"] = "far too long"
    prompter.reject([field])

    prompter.ask([field])

    assert output.getvalue() == "  Count: (blank)\n"
    assert prompter.answers == {"count": None}
