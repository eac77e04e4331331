"""The WSGI application: Slack events, the JSON API and a health check.

Run it with gunicorn through the factory, so nothing is built at import:
`gunicorn 'bot.wsgi:create_wsgi_app()'`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.api import ApiApp
from bot.config import Settings
from bot.log import configure_logging
from bot.runtime import Runtime

logger = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"


class WsgiApp:
    """Routes /slack/events to Bolt and every other path to the JSON API."""

    def __init__(self, runtime: Runtime, slack: Any | None):
        self.runtime = runtime
        self.api = ApiApp(runtime)
        self.slack = SlackRequestHandler(slack, path=SLACK_PATH) if slack else None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == SLACK_PATH and self.slack is not None:
            timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
            # slack_sdk's verifier raises on a timestamp that is not a number,
            # which Bolt turns into a 500 with a traceback in the log.
            if not (timestamp.isascii() and timestamp.isdigit()):
                start_response("401 Unauthorized", [("Content-Type", "text/plain")])
                return [b"Invalid request timestamp"]
            return self.slack(environ, start_response)
        return self.api(environ, start_response)


def create_wsgi_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    slack: bool = True,
    **app_options: Any,
) -> WsgiApp:
    """Build the app; the AWS start-up check runs on a background thread."""
    settings = settings or Settings()
    if runtime is None:
        configure_logging(settings.log_level)
        runtime = Runtime(settings)
    bolt_app = None
    if slack and not settings.slack_signing_secret:
        raise SystemExit(
            "error: SLACK_SIGNING_SECRET is not set; Slack requests cannot be "
            "verified. To try the bot without Slack, run: python -m bot sandbox"
        )
    if slack:
        from bot.slack.app import create_app

        bolt_app = create_app(runtime, **app_options)
    runtime.prepare_in_background()
    return WsgiApp(runtime, bolt_app)
