"""Thread-safe terminal output and line input for the sandbox.

Messages from the bot arrive on other threads while the person types. Every
write takes one lock, so lines never interleave mid-line, and in an
interactive terminal a message that arrives during a prompt is printed above
it and the prompt is drawn again with what the person has typed so far. Log
records take the same lock through ConsoleLogHandler.

Text from Slack messages, modals and input can contain control characters,
so every write shows them as visible escapes (see `printable`) and nothing
that arrives can clear the screen, change colours or set the window title.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# Move to the start of the line and clear it (ANSI escape sequences).
CLEAR_LINE = "\r\x1b[K"

# C0 controls except tab and newline, DEL, and the C1 controls U+0080 to U+009F.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Replace each control character with its escape, such as \\x1b for ESC."""
    return _CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class Console:
    """Writes whole lines to `output` and reads lines from `input`."""

    def __init__(self, input: TextIO, output: TextIO, interactive: bool):
        self.input = input
        self.output = output
        self.interactive = interactive
        self._lock = threading.RLock()
        self._queued: list[list[str]] | None = None
        self._prompt: str | None = None  # the prompt on screen, while reading
        self._readline = None
        if interactive and input is sys.stdin and output is sys.stdout:
            try:
                import readline  # noqa: F401 (gives input() line editing and history)
            except ImportError:
                pass
            else:
                self._readline = readline

    def say(self, *lines: str) -> None:
        """Write lines from the terminal's own thread."""
        with self._lock:
            self._write(list(lines))

    def show(self, lines: list[str]) -> None:
        """Write lines that arrived on another thread, or queue them while held."""
        with self._lock:
            if self._queued is not None:
                self._queued.append(lines)
                return
            self._write(lines)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Queue shown lines until the block ends, then write them in order.

        The terminal queues output while it waits for an acknowledgement, so
        the acknowledgement is printed before the messages it led to, as in Slack.
        """
        with self._lock:
            self._queued = []
        try:
            yield
        finally:
            with self._lock:
                queued, self._queued = self._queued or [], None
                for lines in queued:
                    self._write(lines)

    def read_line(self, prompt: str) -> str | None:
        """Return the next line without its newline, or None at the end of input.

        The prompt is written only in an interactive terminal.
        """
        if not self.interactive:
            line = self.input.readline()
            return None if line == "" else line.rstrip("\r\n")
        prompt = printable(prompt)
        with self._lock:
            self._prompt = prompt
        try:
            if self._readline is not None:
                try:
                    return input(prompt)
                except EOFError:
                    self.output.write("\n")
                    return None
            with self._lock:
                self.output.write(prompt)
                self.output.flush()
            line = self.input.readline()
            return None if line == "" else line.rstrip("\r\n")
        finally:
            with self._lock:
                self._prompt = None

    def write_log(self, text: str, stream: TextIO) -> None:
        """Write a formatted log record to `stream` on lines of its own.

        When `stream` is a terminal and a prompt is on screen, the record goes
        above the prompt, and the prompt is drawn again with the typed text.
        """
        with self._lock:
            redraw = self._prompt is not None and _is_terminal(stream)
            if redraw:
                self._clear_prompt()
            stream.write(printable(text) + "\n")
            stream.flush()
            if redraw:
                self._draw_prompt()

    def _write(self, lines: list[str]) -> None:
        text = printable("\n".join(lines)) + "\n"
        if self._prompt is None:
            self.output.write(text)
            self.output.flush()
            return
        self._clear_prompt()
        self.output.write(text)
        self._draw_prompt()

    def _clear_prompt(self) -> None:
        # Without a terminal to clear the prompt line, start a new line.
        self.output.write(CLEAR_LINE if _is_terminal(self.output) else "\n")
        self.output.flush()

    def _draw_prompt(self) -> None:
        typed = self._readline.get_line_buffer() if self._readline else ""
        self.output.write((self._prompt or "") + printable(typed))
        self.output.flush()


class ConsoleLogHandler(logging.Handler):
    """Logging handler that writes records to `stream` through a Console's lock."""

    def __init__(self, console: Console, stream: TextIO, level: int = logging.NOTSET):
        super().__init__(level)
        self.console = console
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.console.write_log(text, self.stream)
        except Exception:
            self.handleError(record)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
