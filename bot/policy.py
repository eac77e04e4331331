"""The operator's limits on requests: allowed instance types and the count."""

from __future__ import annotations

import re

from bot.config import Settings
from bot.errors import InvalidRequest, NotAllowed
from bot.models import (
    CONTROL_CHARACTERS,
    has_control_characters,
    normalize_instance_type,
    shorten,
)

COUNT_PATTERN = re.compile(r"^[0-9]+$")
PURPOSE_MAX_LENGTH = 500


class Policy:
    """Checks a request against the operator's limits before anything runs."""

    def __init__(self, settings: Settings):
        self.allowed_instance_types = settings.allowed_instance_types
        self.max_instances = settings.max_instances

    def parse_count(self, value: object, *, field: str = "quantity") -> int:
        """Return a count from user input, or raise InvalidRequest naming `field`.

        Accepts an int or a string of ASCII digits; rejects signs, decimals,
        exponents ("1e3"), blanks and anything outside 1..max_instances.
        """
        if isinstance(value, bool):
            raise InvalidRequest({field: "must be a whole number"})
        text = value.strip() if isinstance(value, str) else None
        if isinstance(value, int):
            count = value
        elif text and COUNT_PATTERN.fullmatch(text):
            # Any run of digits is a number; a very long one is just too large.
            count = int(text) if len(text) <= 9 else self.max_instances + 1
        elif text == "":
            raise InvalidRequest({field: "is required"})
        else:
            shown = CONTROL_CHARACTERS.sub("?", shorten(str(value), 20))
            raise InvalidRequest({field: f"'{shown}' is not a whole number"})
        self.check_count(count, field=field)
        return count

    def check_count(self, count: int, *, field: str = "quantity") -> None:
        if count < 1:
            raise InvalidRequest({field: "must be at least 1"})
        if count > self.max_instances:
            raise InvalidRequest(
                {field: f"must be at most {self.max_instances} per allocation"}
            )

    def check_purpose(self, value: str | None, *, field: str = "purpose") -> str | None:
        """Return the purpose stripped, None when blank, or raise InvalidRequest."""
        if value is None or not value.strip():
            return None
        if has_control_characters(value):
            raise InvalidRequest({field: "must not contain control characters"})
        if len(value) > PURPOSE_MAX_LENGTH:
            raise InvalidRequest(
                {field: f"must be at most {PURPOSE_MAX_LENGTH} characters"}
            )
        return value.strip()

    def check_instance_type(self, value: str, *, field: str = "instance_type") -> str:
        """Return the normalized type, or raise if it is malformed or not allowed."""
        try:
            name = normalize_instance_type(value)
        except ValueError as error:
            raise InvalidRequest({field: str(error)}) from None
        if name not in self.allowed_instance_types:
            raise NotAllowed(
                f"{name} is not one of the instance types you can allocate here",
                hint="Allowed: " + ", ".join(self.allowed_instance_types),
            )
        return name
