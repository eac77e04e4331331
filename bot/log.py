"""Logging set-up for every entry point."""

from __future__ import annotations

import logging

# Libraries whose debug output contains request and response bodies (emails,
# response_url tokens), so they stay at WARNING whatever LOG_LEVEL is.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "werkzeug", "slack_bolt", "slack_sdk")


def configure_logging(level: str = "INFO") -> None:
    """Send log lines to stderr with time, level and logger name."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(
            max(logging.WARNING, logging.getLogger().level)
        )
