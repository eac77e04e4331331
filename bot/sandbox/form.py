"""A modal's input fields asked one by one in the terminal.

The person fills in each input block of a view the bot opened: a select
shows its options numbered and grouped, a text field shows its initial
value as the default, and optional fields may stay blank. The values
collected are the raw values that SlackStandin.send_view_submission() takes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any

from bot.sandbox.console import Console
from bot.sandbox.slack_requests import input_blocks
from bot.sandbox.slack_text import Directory, text_object

CANCEL_WORD = "cancel"
SELECT_TYPES = frozenset({"static_select", "radio_buttons"})
CONVERSATION_TYPES = frozenset({"conversations_select", "channels_select"})
TEXT_TYPES = frozenset(
    {"plain_text_input", "number_input", "email_text_input", "url_text_input"}
)


class FormCancelled(Exception):
    """The person typed `cancel`, or the input ended, while the form was open."""


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    group: str = ""


@dataclass
class Field:
    """One input block of the modal, with what the terminal needs to ask for it."""

    block_id: str
    label: str
    element_type: str
    optional: bool
    hint: str = ""
    default: str | None = None  # raw value submitted for a blank line
    options: list[Option] = field(default_factory=list)
    max_length: int | None = None

    @property
    def supported(self) -> bool:
        return self.element_type in SELECT_TYPES | CONVERSATION_TYPES | TEXT_TYPES

    def option_label(self, value: str | None) -> str:
        for option in self.options:
            if option.value == value:
                return option.label
        return value or ""


def read_fields(
    view: dict[str, Any], directory: Directory, channel_id: str | None
) -> list[Field]:
    """Return the input fields of a view, in the order the modal shows them."""
    fields = []
    for block in input_blocks(view):
        element = block["element"]
        element_type = str(element.get("type"))
        hint = text_object(block.get("hint"), directory) or text_object(
            element.get("placeholder"), directory
        )
        found = Field(
            block_id=block["block_id"],
            label=text_object(block.get("label"), directory) or block["block_id"],
            element_type=element_type,
            optional=bool(block.get("optional")),
            hint=hint,
            max_length=element.get("max_length"),
        )
        if element_type in SELECT_TYPES:
            found.options = _select_options(element, directory)
            initial = element.get("initial_option") or {}
            found.default = initial.get("value")
        elif element_type in CONVERSATION_TYPES:
            found.options = [
                Option(c.id, c.name) for c in directory.conversations() if c.id
            ]
            found.default = element.get("initial_conversation") or element.get(
                "initial_channel"
            )
            if found.default is None and element.get("default_to_current_conversation"):
                found.default = channel_id
        elif element_type in TEXT_TYPES:
            initial_value = element.get("initial_value")
            found.default = None if initial_value is None else str(initial_value)
        fields.append(found)
    return fields


def _select_options(element: dict[str, Any], directory: Directory) -> list[Option]:
    options = [
        Option(str(o.get("value")), text_object(o.get("text"), directory))
        for o in element.get("options") or []
    ]
    for group in element.get("option_groups") or []:
        name = text_object(group.get("label"), directory)
        options += [
            Option(str(o.get("value")), text_object(o.get("text"), directory), name)
            for o in group.get("options") or []
        ]
    return options


class FormPrompter:
    """Prompts for the fields of one modal and keeps the values between attempts."""

    def __init__(self, console: Console):
        self.console = console
        self.answers: dict[str, Any] = {}  # block_id -> raw value
        self.rejected: dict[str, Any] = {}  # block_id -> raw value the bot rejected

    def reject(self, fields: list[Field]) -> None:
        """Forget the values the bot marked invalid, so those fields are prompted again.

        A blank line then submits the field's default, unless the default is
        the rejected value, in which case the prompt repeats.
        """
        for form_field in fields:
            value = self.answers.pop(form_field.block_id, form_field.default)
            self.rejected[form_field.block_id] = value

    def ask(self, fields: list[Field]) -> None:
        """Ask for each field in turn. Raises FormCancelled."""
        for form_field in fields:
            if form_field.supported:
                self._ask_field(form_field)

    def _ask_field(self, form_field: Field) -> None:
        block_id = form_field.block_id
        was_rejected = block_id in self.rejected
        rejected = self.rejected.get(block_id)
        current = self.answers.get(block_id, form_field.default)
        if was_rejected and current == rejected:
            current = None
        if self.console.interactive:
            self._describe(form_field)
        prompt = self._prompt(form_field, current)
        while True:
            line = self.console.read_line(prompt)
            if line is None or line.strip().lower() == CANCEL_WORD:
                raise FormCancelled()
            answer = line.strip()
            if answer:
                try:
                    value = self._parse(form_field, answer)
                except ValueError as error:
                    self.console.say(f"  {error}")
                    continue
                self.answers[block_id] = value
                self._echo(form_field, value)
                return
            if current is not None:
                self._echo(form_field, current, "default")
                return
            if was_rejected and rejected is not None and form_field.optional:
                # A blank line clears an optional field whose value was rejected.
                self.answers[block_id] = None
                self._echo(form_field, None)
                return
            if was_rejected:
                rejected_text = form_field.option_label(rejected) or "an empty value"
                self.console.say(
                    f"  The bot rejected {rejected_text}; type another value or cancel."
                )
                continue
            if form_field.optional:
                self._echo(form_field, None)
                return
            self.console.say("  This field is required.")

    def _parse(self, form_field: Field, answer: str) -> str:
        if not form_field.options:
            if form_field.max_length and len(answer) > form_field.max_length:
                raise ValueError(
                    f"Use at most {form_field.max_length} characters "
                    f"(this answer has {len(answer)})."
                )
            return answer
        if answer.isdigit() and 1 <= int(answer) <= len(form_field.options):
            return form_field.options[int(answer) - 1].value
        requested = answer.lower().removeprefix("#")
        for option in form_field.options:
            names = {option.value.lower(), option.label.lower().removeprefix("#")}
            if requested in names:
                return option.value
        example = form_field.options[0].value
        if form_field.element_type in CONVERSATION_TYPES:
            example = form_field.options[0].label
        raise ValueError(
            f"'{answer[:40]}' is not one of the options. Type a number from 1 to "
            f"{len(form_field.options)} or a name such as {example}."
        )

    def _describe(self, form_field: Field) -> None:
        lines = [""]
        heading = form_field.label + (" (optional)" if form_field.optional else "")
        lines.append(heading)
        if form_field.hint:
            lines.append(f"  {form_field.hint}")
        if form_field.options:
            lines += option_table(form_field.options)
        self.console.say(*lines)

    def _prompt(self, form_field: Field, current: str | None) -> str:
        if form_field.options:
            kind = "number or name"
            if current is not None:
                kind += f", Enter for {form_field.option_label(current)}"
            return f"{form_field.label} ({kind}): "
        if current is not None:
            return f"{form_field.label} [{current}]: "
        return f"{form_field.label}: "

    def _echo(self, form_field: Field, value: str | None, note: str = "") -> None:
        """Repeat the value: a chosen option's label, or any value read from a pipe."""
        if self.console.interactive:
            if form_field.options and value is not None:
                self.console.say(f"  Chosen: {form_field.option_label(value)}")
            return
        if value is None:
            displayed = "(blank)"
        elif form_field.options:
            displayed = form_field.option_label(value)
        else:
            displayed = value
        suffix = f" ({note})" if note and value is not None else ""
        self.console.say(f"  {form_field.label}: {displayed}{suffix}")


def option_table(options: list[Option]) -> list[str]:
    """Lay out numbered options in columns, one row group per option group."""
    entries = [
        f"{number:>2}) {option.label}" for number, option in enumerate(options, 1)
    ]
    width = max(len(entry) for entry in entries) + 3
    group_width = max(len(option.group) for option in options) + 2
    terminal_width = shutil.get_terminal_size((100, 24)).columns
    columns = max(1, (terminal_width - 2 - group_width) // width)
    lines = []
    index = 0
    while index < len(options):
        group = options[index].group
        members = []
        while index < len(options) and options[index].group == group:
            members.append(entries[index])
            index += 1
        for row_start in range(0, len(members), columns):
            row = members[row_start : row_start + columns]
            label = group if row_start == 0 else ""
            cells = "".join(entry.ljust(width) for entry in row).rstrip()
            lines.append(f"  {label.ljust(group_width)}{cells}")
    return lines
