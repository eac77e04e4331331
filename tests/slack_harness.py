"""The bot served over real HTTP on 127.0.0.1, with the Slack stand-in beside it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import make_server

from bot.allocations import AllocationService
from bot.config import Settings
from bot.runtime import Runtime
from bot.sandbox.slack_standin import Call, SlackStandin
from bot.slack.workers import Workers
from bot.wsgi import create_wsgi_app


@dataclass
class SlackBot:
    """Handles for one running bot: the stand-in, the service and the lazy work."""

    standin: SlackStandin
    runtime: Runtime
    executor: Workers
    url: str

    @property
    def service(self) -> AllocationService:
        return self.runtime.service

    def settle(self) -> None:
        """Wait until every lazy listener has finished."""
        self.executor.shutdown(wait=True)

    def posts(self) -> list[dict[str, Any]]:
        return [call.args for call in self.standin.calls("chat.postMessage") if call.ok]

    def calls(self, method: str) -> list[Call]:
        return self.standin.calls(method)


@contextmanager
def running_bot(settings: Settings, service: AllocationService) -> Iterator[SlackBot]:
    """Serve the production WSGI app against the stand-in until the block ends."""
    assert settings.slack_bot_token and settings.slack_signing_secret
    standin = SlackStandin(
        settings.slack_bot_token.get_secret_value(),
        settings.slack_signing_secret.get_secret_value(),
    ).start()
    settings = settings.model_copy(update={"slack_api_url": standin.api_url})
    service.settings = settings
    runtime = Runtime(settings, service=service)
    executor = Workers(launch_workers=8, follow_workers=8)
    app = create_wsgi_app(settings, runtime=runtime, listener_executor=executor)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{server.port}"
    standin.request_url = url + "/slack/events"
    try:
        yield SlackBot(standin, runtime, executor, url)
    finally:
        executor.shutdown(wait=True)
        server.shutdown()
        standin.stop()
        # The start-up check must end while moto is still in place, or it
        # would go on to call the real AWS endpoints.
        if runtime.background is not None:
            runtime.background.join(timeout=30)
