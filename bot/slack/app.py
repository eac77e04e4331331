"""Wiring of the Bolt app: one module per Slack surface, each with register()."""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.runtime import Runtime
from bot.slack import commands, views
from bot.slack.workers import Workers

logger = logging.getLogger(__name__)


class _IgnoreTokenNotice(logging.Filter):
    """Drop Bolt's warning that SLACK_BOT_TOKEN goes unused.

    Bolt reads the variable itself and warns when a client is passed too, but
    the client create_app passes carries that same token.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def create_web_client(runtime: Runtime) -> WebClient:
    """Return a WebClient for SLACK_API_URL that retries rate limits and resets."""
    settings = runtime.settings
    token = (
        settings.slack_bot_token.get_secret_value()
        if settings.slack_bot_token
        else None
    )
    return WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=2),
        ],
    )


def create_app(
    runtime: Runtime,
    *,
    client: WebClient | None = None,
    listener_executor: Executor | None = None,
    token_verification: bool = True,
) -> App:
    """Build the Bolt app.

    Each listener acknowledges before it returns (process_before_response),
    then submits the slow work to `listener_executor`, which defaults to
    Workers: a launch pool and a follow pool.
    """
    settings = runtime.settings
    secret = settings.slack_signing_secret
    executor = listener_executor or Workers()
    bolt_logger = logging.getLogger("slack_bolt.App")
    if not any(isinstance(f, _IgnoreTokenNotice) for f in bolt_logger.filters):
        bolt_logger.addFilter(_IgnoreTokenNotice())
    app = App(
        client=client or create_web_client(runtime),
        signing_secret=secret.get_secret_value() if secret else "",
        process_before_response=True,
        token_verification_enabled=token_verification,
        listener_executor=executor,
    )
    commands.register(app, runtime, executor)
    views.register(app, runtime, executor)
    app.error(_log_unhandled_error)
    return app


def _log_unhandled_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
    kind = body.get("type") or body.get("command") or "request"
    logger.error("Unhandled error in a Slack %s listener", kind, exc_info=error)
    return BoltResponse(status=500, body="")
