"""Logging set-up for every entry point."""

from __future__ import annotations

import logging

QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "werkzeug", "slack_bolt.App")


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
