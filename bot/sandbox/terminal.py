"""The sandbox's prompt: a person's side of Slack, one line at a time.

Lines starting with /allocate go to the bot as slash commands from the
current user in the current conversation. The acknowledgement is printed as
Slack shows it, only to the person who ran the command. When the bot opens
its modal, the terminal prompts for each field, submits the values, and
prompts again for the fields that the bot marks as invalid.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.sandbox.console import Console
from bot.sandbox.form import FormCancelled, FormPrompter, read_fields
from bot.sandbox.slack_requests import ACK_DEADLINE_SECONDS, BotResponse
from bot.sandbox.slack_standin import SlackStandin
from bot.sandbox.slack_text import (
    BOT_DISPLAY_NAME,
    ONLY_VISIBLE_TO_YOU,
    Conversation,
    Directory,
    clock_time,
    message_lines,
)

SLASH_COMMAND = "/allocate"
QUIT_WORDS = frozenset({"quit", "exit"})

HELP_LINES = (
    "Commands:",
    "  /allocate TYPE [COUNT]   allocate instances, for example /allocate t3.2xlarge 1",
    "  /allocate                open the form; answer its fields one by one",
    "  /allocate help           show the bot's usage message",
    "  channels                 list the conversations you can type in",
    "  channel NAME             switch conversation: #private-team, an ID or a number",
    "  help                     show this list",
    "  quit                     stop the sandbox (also exit, Ctrl-D or Ctrl-C)",
)


@dataclass
class Person:
    """The workspace member at the keyboard and where they are typing."""

    user_id: str
    name: str
    channel_id: str


class Terminal:
    """Reads lines and acts on them as the person in the Slack workspace."""

    def __init__(
        self,
        standin: SlackStandin,
        console: Console,
        directory: Directory,
        person: Person,
    ):
        self.standin = standin
        self.console = console
        self.directory = directory
        self.person = person
        self.bot_errors = 0  # requests that got an HTTP error or no response

    def run(self) -> None:
        """Handle lines until `quit` or the end of input."""
        while True:
            line = self.console.read_line(self.prompt)
            if line is None:
                return
            if not self.handle(line):
                return

    @property
    def prompt(self) -> str:
        channel = self.directory.conversation_name(self.person.channel_id)
        return f"{self.person.name} in {channel}> "

    def handle(self, line: str) -> bool:
        """Act on one line; return False when the person asked to quit."""
        text = line.strip()
        if not text:
            return True
        if not self.console.interactive:
            # Piped input is not echoed, so repeat each line above its output.
            channel = self.directory.conversation_name(self.person.channel_id)
            self.console.say(f"{self.person.name} in {channel}: {text}")
        word, _, rest = text.partition(" ")
        lowered = word.lower()
        if lowered in QUIT_WORDS:
            return False
        if lowered == "help":
            self.console.say(*HELP_LINES)
        elif lowered == "channels":
            self.list_conversations()
        elif lowered == "channel":
            self.switch_conversation(rest.strip())
        elif lowered == SLASH_COMMAND:
            self.send_command(rest.strip())
        elif word.startswith("/"):
            self.console.say(
                f"{word} is not a command in this workspace. "
                f"The bot provides {SLASH_COMMAND}; type help for the commands."
            )
        else:
            self.console.say(
                f"Unknown command '{word[:40]}'. The bot reacts to {SLASH_COMMAND}; "
                "type help for the commands."
            )
        return True

    # Conversations

    def list_conversations(self) -> None:
        lines = ["Conversations:"]
        for number, conversation in enumerate(self.directory.conversations(), 1):
            marker = "*" if conversation.id == self.person.channel_id else " "
            note = f" · {conversation.note}" if conversation.note else ""
            lines.append(
                f" {marker}{number}) {conversation.name} ({conversation.id}){note}"
            )
        lines.append("Switch with: channel NAME, channel ID or channel NUMBER")
        self.console.say(*lines)

    def switch_conversation(self, requested: str) -> None:
        if not requested:
            self.console.say(
                "Usage: channel NAME, channel ID or channel NUMBER, for example "
                "channel #private-team (type channels to list them)."
            )
            return
        found = self._find_conversation(requested)
        if found is None:
            names = ", ".join(c.name for c in self.directory.conversations())
            self.console.say(
                f"No conversation '{requested[:40]}'. Choose one of: {names} "
                "(type channels to see their IDs and numbers)."
            )
            return
        self.person.channel_id = found.id
        self.console.say(f"You are now in {found.name}.")

    def _find_conversation(self, requested: str) -> Conversation | None:
        conversations = self.directory.conversations()
        if requested.isdigit() and 1 <= int(requested) <= len(conversations):
            return conversations[int(requested) - 1]
        key = requested.lower().removeprefix("#")
        for conversation in conversations:
            if key in (conversation.id.lower(), conversation.name.lower().lstrip("#")):
                return conversation
        return None

    # Slash command and modal

    def send_command(self, text: str) -> None:
        """Send /allocate with `text`, print the acknowledgement, fill a modal."""
        with self.console.holding():
            response = self._send(
                lambda: self.standin.send_command(
                    text,
                    SLASH_COMMAND,
                    user_id=self.person.user_id,
                    channel_id=self.person.channel_id,
                )
            )
            if response is None:
                return
            self._show_acknowledgement(response)
            view = self._opened_view(response.trigger_id)
        if view is not None:
            self.fill_modal(view)

    def fill_modal(self, view: dict[str, Any]) -> None:
        """Ask for the modal's fields and submit them until the bot accepts them."""
        title = self._view_text(view, "title")
        fields = read_fields(view, self.directory, self.person.channel_id)
        place = self.directory.conversation_name(self.person.channel_id)
        self.console.say(
            f'{place} · {BOT_DISPLAY_NAME} opened the form "{title}".',
            "Press Enter to keep a default, or type cancel to close the form.",
        )
        prompter = FormPrompter(self.console)
        to_ask = fields
        while True:
            try:
                prompter.ask(to_ask)
            except FormCancelled:
                self.console.say("Form closed without submitting.")
                return
            with self.console.holding():
                response = self._send(
                    lambda: self.standin.send_view_submission(
                        view["id"], prompter.answers
                    )
                )
                if response is None:
                    return
                body = response.json if isinstance(response.json, dict) else {}
                action = body.get("response_action")
                if action != "errors":
                    self._report_submission(response, action)
                    return
            errors: dict[str, str] = body.get("errors") or {}
            lines = ["The bot marked fields as invalid; the form stays open:"]
            by_id = {f.block_id: f for f in fields}
            for block_id, message in errors.items():
                label = by_id[block_id].label if block_id in by_id else block_id
                lines.append(f"  ⚠ {label}: {message}")
            self.console.say(*lines)
            prompter.reject([f for f in fields if f.block_id in errors])
            to_ask = [f for f in fields if f.block_id in errors and f.supported]
            if not to_ask:
                self.console.say(
                    "None of these fields can be changed here, so the form closes."
                )
                return

    def _report_submission(self, response: BotResponse, action: str | None) -> None:
        if response.status != 200:
            self.bot_errors += 1
            # Slack keeps the modal open and shows a connection error in it.
            self.console.say(
                "The form could not be submitted: the bot responded with HTTP "
                f"{response.status}. See the bot's log on stderr."
            )
        elif action in (None, "clear"):
            self.console.say("Form submitted.")
        else:
            self.console.say(
                f"Form submitted. The bot responded with response_action {action!r}, "
                "which this terminal does not show."
            )

    def _opened_view(self, trigger_id: str | None) -> dict[str, Any] | None:
        """Return the modal that the bot opened with this command's trigger_id."""
        if trigger_id is None:
            return None
        for call in self.standin.calls("views.open"):
            if call.ok and call.args.get("trigger_id") == trigger_id:
                return call.response["view"]
        return None

    def _show_acknowledgement(self, response: BotResponse) -> None:
        if response.status != 200:
            self._report_bot_error(response)
            return
        if response.elapsed_seconds > ACK_DEADLINE_SECONDS:
            self.console.say(
                f'{SLASH_COMMAND} failed with the error "operation_timeout": the bot '
                f"took {response.elapsed_seconds:.1f} s, and Slack waits "
                f"{ACK_DEADLINE_SECONDS:.0f} s."
            )
        body = response.json
        if body is None and response.text.strip():
            body = {"text": response.text}
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return
        place = self.directory.conversation_name(self.person.channel_id)
        header = f"{place} · {BOT_DISPLAY_NAME} · {clock_time(None)}"
        if body.get("response_type") != "in_channel":
            header += f" · {ONLY_VISIBLE_TO_YOU}"
        lines = message_lines(body.get("text"), body.get("blocks"), self.directory)
        self.console.say(header, *("  " + line if line else "" for line in lines))

    def _report_bot_error(self, response: BotResponse) -> None:
        self.bot_errors += 1
        # Slack shows an app's HTTP error to the person in this form, for
        # example "500_service_error" or "404_client_error" (as users report it).
        kind = "service" if response.status >= 500 else "client"
        self.console.say(
            f'{SLASH_COMMAND} failed with the error "{response.status}_{kind}_error". '
            "See the bot's log on stderr."
        )

    def _send(self, send: Callable[[], BotResponse]) -> BotResponse | None:
        try:
            return send()
        except (urllib.error.URLError, OSError) as error:
            self.bot_errors += 1
            reason = getattr(error, "reason", error)
            self.console.say(
                f"Could not reach the bot at {self.standin.request_url}: {reason}"
            )
            return None

    @staticmethod
    def _view_text(view: dict[str, Any], key: str) -> str:
        value = view.get(key)
        return str(value.get("text") or "") if isinstance(value, dict) else ""
