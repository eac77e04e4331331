"""Thread-safe terminal output and line input for the sandbox.

Messages from the bot arrive on other threads while the person types. Every
write takes one lock, so lines never interleave mid-line, and in an
interactive terminal a message that arrives during a prompt is printed above
it and the prompt is drawn again with what the person has typed so far.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# Move to the start of the line and clear it (ANSI escape sequences).
CLEAR_LINE = "\r\x1b[K"


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

    def _write(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        if self._prompt is None:
            self.output.write(text)
        else:
            typed = self._readline.get_line_buffer() if self._readline else ""
            # Without a terminal to clear the prompt line, start a new line.
            start = CLEAR_LINE if self.output.isatty() else "\n"
            self.output.write(start + text + self._prompt + typed)
        self.output.flush()
