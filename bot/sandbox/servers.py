"""The sandbox's servers on 127.0.0.1: moto, the Slack stand-in and the bot.

The bot reaches moto and the stand-in through its usual settings,
aws_endpoint_url and slack_api_url, so every request takes the production
code path, including Slack signature checks.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from bot.config import Settings
from bot.runtime import Runtime
from bot.sandbox.slack_standin import SlackStandin
from bot.slack.workers import Workers
from bot.wsgi import SLACK_PATH, create_wsgi_app

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
TABLE = "sandbox-allocations"

# Moto reports instances as running at the first describe, so a short poll
# keeps the sandbox quick, and an allocation that has not settled within a
# minute means something is wrong.
STATUS_POLL_SECONDS = 0.5
STATUS_TIMEOUT_SECONDS = 60.0
# How often the bot's server checks for shutdown; the default 0.5 s would
# add that much to every stop.
SHUTDOWN_POLL_SECONDS = 0.05

FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}
# Variables that could lead boto3 to a real account, or send the bot's
# loopback requests through a proxy (slack_sdk reads HTTPS_PROXY and ignores
# NO_PROXY).
REMOVED_ENVIRONMENT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
# An empty ProxyHandler keeps proxy variables from routing loopback requests.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SandboxSettings(Settings):
    """Settings from constructor arguments only, so no variable of the shell
    (AMI_ID, SUBNET_IDS, SLACK_API_URL and the rest) reaches the sandbox."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, *sources: Any, **named: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)


class Sandbox:
    """The three local servers and the thread pool that runs the bot's allocations."""

    def __init__(self) -> None:
        self.moto: Any = None
        self.standin: SlackStandin | None = None
        self.runtime: Runtime | None = None
        self.executor: Workers | None = None
        self.server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self.aws_url = ""
        self.api_token = secrets.token_hex(16)

    @property
    def bot_url(self) -> str:
        assert self.server is not None
        return f"http://{LOOPBACK}:{self.server.port}"

    def start(self) -> None:
        """Start moto, the Slack stand-in and the bot, in that order.

        Creates the ledger table and loads the instance types before it
        returns, so the first allocation does not wait for moto to warm up.
        """
        from moto.server import ThreadedMotoServer

        self.moto = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.aws_url = f"http://{host}:{port}"
        os.environ["AWS_ENDPOINT_URL"] = self.aws_url
        reset_moto(self.aws_url)

        bot_token = "xoxb-" + secrets.token_hex(16)
        signing_secret = secrets.token_hex(16)
        self.standin = SlackStandin(bot_token, signing_secret).start()

        settings = SandboxSettings(
            slack_bot_token=bot_token,
            slack_signing_secret=signing_secret,
            slack_api_url=self.standin.api_url,
            aws_endpoint_url=self.aws_url,
            aws_region=REGION,
            allocations_table=TABLE,
            status_poll_seconds=STATUS_POLL_SECONDS,
            status_timeout_seconds=STATUS_TIMEOUT_SECONDS,
            api_token=self.api_token,
        )
        self.runtime = Runtime(settings)
        self.runtime.prepare()

        self.executor = Workers()
        app = create_wsgi_app(
            settings, runtime=self.runtime, listener_executor=self.executor
        )
        self.server = make_server(LOOPBACK, 0, app, threaded=True)
        self._server_thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="sandbox-bot",
            daemon=True,
        )
        self._server_thread.start()
        self.standin.request_url = self.bot_url + SLACK_PATH
        logger.info(
            "Sandbox started: bot on %s, moto on %s", self.bot_url, self.aws_url
        )

    def settle(self) -> None:
        """Wait until every allocation submitted to the executor has settled.

        Call it after the last request to the bot has returned. The bot's
        listeners submit an allocation to the executor before the response is
        sent, and each one runs until its instances are running or it fails.
        """
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def stop(self, wait_for_allocations: bool = True) -> None:
        """Stop the bot, then the stand-in and moto. Safe after a partial start.

        With wait_for_allocations=False, the allocation threads still running are
        left to finish, so moto and the stand-in keep serving them on their
        daemon threads until the process exits.
        """
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self._server_thread is not None:
            self._server_thread.join()
        if not wait_for_allocations and self.runtime is not None:
            self.runtime.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=wait_for_allocations, cancel_futures=True)
        if not wait_for_allocations:
            return
        # The start-up check must end before moto goes away.
        if self.runtime is not None and self.runtime.background is not None:
            self.runtime.background.join(timeout=10)
        if self.standin is not None:
            self.standin.stop()
        if self.moto is not None:
            self.moto.stop()
        logger.info("Sandbox stopped")


def reset_moto(aws_url: str) -> None:
    """Clear moto's state through its reset API (POST /moto-api/reset).

    Moto keeps its state per process, so without a reset a second sandbox
    run in the same process (as in the tests) would find the first run's
    table and instances. A fresh process starts clean either way.
    """
    request = urllib.request.Request(f"{aws_url}/moto-api/reset", method="POST")
    with _LOOPBACK_OPENER.open(request, timeout=10) as response:
        response.read()


@contextmanager
def fake_aws_environment() -> Iterator[None]:
    """Point boto3 at fake credentials in this process, and restore the
    environment on exit so that a caller in the same process is unaffected."""
    names = (*FAKE_AWS_ENVIRONMENT, *REMOVED_ENVIRONMENT, "AWS_ENDPOINT_URL")
    saved = {name: os.environ.get(name) for name in names}
    for name in REMOVED_ENVIRONMENT:
        os.environ.pop(name, None)
    os.environ.update(FAKE_AWS_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
