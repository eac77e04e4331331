"""`python -m bot sandbox`: the production bot, with AWS and Slack run locally.

Three servers start on 127.0.0.1 (see servers.py): moto for EC2, SSM and
DynamoDB, the Slack Web API stand-in, and the bot's own WSGI app. The
terminal plays a person in Slack.

Exit status: 0 after a normal end (a failed allocation is a normal end),
1 when the sandbox itself broke (a server did not start, the bot responded
with an HTTP error, an allocation never settled), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from bot.log import configure_logging
from bot.sandbox.console import Console, ConsoleLogHandler
from bot.sandbox.rendering import ChannelRenderer
from bot.sandbox.servers import Sandbox, fake_aws_environment
from bot.sandbox.slack_standin import SlackStandin
from bot.sandbox.slack_text import Conversation, Directory
from bot.sandbox.slack_workspace import DEFAULT_CHANNEL_ID, DEFAULT_USER_ID
from bot.sandbox.terminal import HELP_LINES, Person, Terminal
from bot.wsgi import SLACK_PATH

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_BROKEN, EXIT_INTERRUPTED = 0, 1, 130

USER_NAME = "Ada Lovelace"
OTHER_USER_ID, OTHER_USER_NAME = "U0000000002", "Grace Hopper"
PRIVATE_CHANNEL_ID, PRIVATE_CHANNEL_NAME = "C0000000002", "#private-team"
OTHERS_DM_ID = "D0000000009"
API_ALLOCATE_PATH = "/resources/allocate"


def add_people_and_conversations(standin: SlackStandin, directory: Directory) -> Person:
    """Fill the workspace with a second person and conversations the bot is not in.

    Returns the person at the keyboard, who starts in #general.
    """
    standin.add_user(OTHER_USER_ID, OTHER_USER_NAME, "grace@example.com")
    standin.add_channel(PRIVATE_CHANNEL_ID, PRIVATE_CHANNEL_NAME, bot_is_member=False)
    standin.add_channel(OTHERS_DM_ID, "", bot_is_member=False)
    directory.add_user(DEFAULT_USER_ID, USER_NAME)
    directory.add_user(OTHER_USER_ID, OTHER_USER_NAME)
    conversations = [
        Conversation(DEFAULT_CHANNEL_ID, "#general", True, "the bot is a member"),
        Conversation(
            PRIVATE_CHANNEL_ID,
            PRIVATE_CHANNEL_NAME,
            False,
            "the bot is not a member, so it reports to you by DM",
        ),
        Conversation(
            OTHERS_DM_ID,
            f"DM with {OTHER_USER_NAME}",
            False,
            "a DM between two people, where the bot cannot post",
        ),
    ]
    for conversation in conversations:
        directory.add_conversation(conversation)
    return Person(DEFAULT_USER_ID, USER_NAME, DEFAULT_CHANNEL_ID)


def banner(sandbox: Sandbox, interactive: bool) -> list[str]:
    """Return what is running and how to use it; one line for piped input."""
    assert sandbox.standin is not None
    api_url = f"{sandbox.bot_url}{API_ALLOCATE_PATH}"
    if not interactive:
        # The API token is left out, because the output of piped runs is often kept.
        return [
            f"Sandbox running on 127.0.0.1: bot {sandbox.bot_url}, "
            f"JSON API {api_url}, Slack stand-in {sandbox.standin.url}, "
            f"AWS (moto) {sandbox.aws_url}"
        ]
    body = (
        '{"resource_type": "t3.micro", "quantity": 1, '
        f'"user_info": {{"name": "{USER_NAME}"}}}}'
    )
    return [
        "EC2 Allocator sandbox: the production bot, with moto for AWS and a local",
        "Slack stand-in. All of them listen on 127.0.0.1 and reach neither AWS nor",
        "Slack.",
        f"  AWS (moto)         {sandbox.aws_url}",
        f"  Slack Web API      {sandbox.standin.api_url}",
        f"  Bot request URL    {sandbox.bot_url}{SLACK_PATH}",
        f"  JSON API           {api_url}",
        f"  API token          {sandbox.api_token}",
        "Try the JSON API from another shell:",
        f"  curl -s {api_url} \\",
        f"    -H 'Authorization: Bearer {sandbox.api_token}' \\",
        "    -H 'Content-Type: application/json' \\",
        f"    -d '{body}'",
        "",
        f"You are {USER_NAME} ({DEFAULT_USER_ID}) in #general.",
        *HELP_LINES,
        "",
    ]


def settled_summary(sandbox: Sandbox, allocation_ids: list[str]) -> tuple[str, bool]:
    """Return a one-line summary read from the ledger, and whether all settled."""
    if not allocation_ids:
        return "No allocations were recorded.", True
    assert sandbox.runtime is not None
    ledger = sandbox.runtime.service.ledger
    parts = []
    settled = True
    for allocation_id in allocation_ids:
        allocation = ledger.get(allocation_id)
        if allocation is None:
            parts.append(f"{allocation_id} not found in the ledger")
            settled = False
        elif allocation.state.is_final:
            parts.append(f"{allocation_id} {allocation.state.value}")
        else:
            parts.append(f"{allocation_id} {allocation.state.value} (not settled)")
            settled = False
    count = len(allocation_ids)
    noun = "allocation" if count == 1 else "allocations"
    verb = "settled" if settled else "recorded"
    return f"{count} {noun} {verb}: " + ", ".join(parts), settled


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot sandbox",
        description="Run the bot offline: moto for AWS, a local Slack stand-in "
        "and a terminal that plays a person in Slack.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log the bot's INFO lines to stderr (default: warnings and errors only; "
        "SANDBOX_LOG_LEVEL sets another level)",
    )
    return parser.parse_args([] if argv is None else argv)


def run_sandbox(
    argv: list[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the sandbox until `quit` or the end of input; return the exit status."""
    arguments = parse_arguments(argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    _replace_unencodable_output(stdout)

    default_level = "INFO" if arguments.verbose else "WARNING"
    level = (os.environ.get("SANDBOX_LOG_LEVEL") or default_level).upper()
    if not isinstance(logging.getLevelName(level), int):
        print(
            f"error: SANDBOX_LOG_LEVEL={level!r} is not a log level; "
            "use DEBUG, INFO, WARNING or ERROR",
            file=sys.stderr,
        )
        return 2

    interactive = stdin.isatty()
    console = Console(stdin, stdout, interactive)
    if interactive:
        console.say("Starting moto, the Slack stand-in and the bot on 127.0.0.1…")

    with _log_level(level), _logging_through(console), fake_aws_environment():
        sandbox = Sandbox()
        try:
            sandbox.start()
        except KeyboardInterrupt:
            sandbox.stop()
            return EXIT_INTERRUPTED
        except Exception as error:
            logger.debug("Sandbox start failed", exc_info=True)
            print(
                f"error: the sandbox could not start: {error}. "
                "Run it with SANDBOX_LOG_LEVEL=DEBUG to see the traceback.",
                file=sys.stderr,
            )
            sandbox.stop()
            return EXIT_BROKEN
        return _run_terminal(sandbox, console)


def _run_terminal(sandbox: Sandbox, console: Console) -> int:
    assert sandbox.standin is not None
    directory = Directory()
    person = add_people_and_conversations(sandbox.standin, directory)
    renderer = ChannelRenderer(directory, console.show)
    unsubscribe = sandbox.standin.subscribe(renderer)
    terminal = Terminal(sandbox.standin, console, directory, person)

    status = EXIT_OK
    try:
        console.say(*banner(sandbox, console.interactive))
        terminal.run()
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        console.say(
            "",
            "Stopping: waiting for allocations in progress "
            "(press Ctrl-C again to stop at once).",
        )
    except Exception:
        status = EXIT_BROKEN
        logger.exception("The sandbox terminal failed; stopping")

    try:
        sandbox.settle()
    except KeyboardInterrupt:
        unsubscribe()
        sandbox.stop(wait_for_allocations=False)
        console.say("Stopped without waiting for the allocations in progress.")
        return EXIT_INTERRUPTED

    try:
        summary, settled = settled_summary(sandbox, renderer.allocation_ids)
    except Exception as error:
        logger.exception("Reading the ledger failed")
        summary, settled = f"Could not read the ledger: {error}", False
    finally:
        unsubscribe()
        sandbox.stop()
    console.say(summary)

    if status == EXIT_OK and (not settled or terminal.bot_errors):
        status = EXIT_BROKEN
    return status


@contextmanager
def _log_level(level: str) -> Iterator[None]:
    """Log to stderr at `level` while the sandbox runs, then restore the root level."""
    root = logging.getLogger()
    previous = root.level
    configure_logging(level)
    root.setLevel(level.upper())
    try:
        yield
    finally:
        root.setLevel(previous)


@contextmanager
def _logging_through(console: Console) -> Iterator[None]:
    """Send the root logger's stderr output through `console` while the sandbox runs.

    Log records then take the console's lock: they do not break into a line
    being written, they appear above the prompt, and control characters in
    them are escaped. Only plain StreamHandlers are replaced, so handlers of
    other kinds (files, pytest's capture) stay as they are.
    """
    root = logging.getLogger()
    previous = list(root.handlers)
    replaced: list[logging.Handler] = []
    for handler in previous:
        if type(handler) is logging.StreamHandler:
            through_console = ConsoleLogHandler(console, handler.stream, handler.level)
            through_console.setFormatter(handler.formatter)
            replaced.append(through_console)
        else:
            replaced.append(handler)
    root.handlers = replaced
    try:
        yield
    finally:
        root.handlers = previous


def _replace_unencodable_output(stream: TextIO) -> None:
    """Let output without UTF-8 show "?" for symbols such as ↳ instead of failing."""
    encoding = getattr(stream, "encoding", None)
    reconfigure = getattr(stream, "reconfigure", None)
    if not encoding or reconfigure is None:
        return
    try:
        "↳⏳✅".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        reconfigure(errors="replace")
