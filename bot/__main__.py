"""Command line: serve the bot, or run it offline in a sandbox."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from pydantic import ValidationError

from bot.config import Settings
from bot.log import configure_logging

logger = logging.getLogger("bot")

SANDBOX_POINTER = "To try the bot without Slack or AWS, run: python -m bot sandbox"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["sandbox"]:
        # The sandbox's parser gets everything after "sandbox", --help included.
        from bot.sandbox.main import run_sandbox

        return run_sandbox(arguments[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Allocate EC2 capacity from Slack and a JSON API.",
        epilog="Run 'python -m bot sandbox --help' for the sandbox's options.",
    )
    parser.add_argument(
        "mode",
        nargs="?",
        choices=["serve", "sandbox"],
        default="serve",
        help="serve (default) connects to Slack and AWS; sandbox runs offline",
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="HTTP address to bind (serve mode)"
    )
    # Options that follow "sandbox" elsewhere in the line, as in
    # "--host 0.0.0.0 sandbox --verbose", belong to the sandbox's parser.
    args, sandbox_args = parser.parse_known_args(arguments)
    if args.mode == "sandbox":
        from bot.sandbox.main import run_sandbox

        return run_sandbox(sandbox_args)
    if sandbox_args:
        parser.error("unrecognized arguments: " + " ".join(sandbox_args))
    try:
        settings = Settings()
    except ValidationError as error:
        problem = error.errors()[0]
        name = str(problem["loc"][0]).upper() if problem["loc"] else "setting"
        print(f"error: {name}: {problem['msg']}", file=sys.stderr)
        return 2
    missing = missing_credentials(settings)
    if missing:
        print(f"error: {missing} is not set. {SANDBOX_POINTER}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.slack_app_token:
        return serve_socket_mode(settings, args.host)
    return serve_http(settings, args.host)


def missing_credentials(settings: Settings) -> str | None:
    """Return the first variable the chosen mode needs but lacks."""
    if not settings.slack_bot_token:
        return "SLACK_BOT_TOKEN"
    if not settings.slack_app_token and not settings.slack_signing_secret:
        return "SLACK_SIGNING_SECRET"
    return None


def serve_http(settings: Settings, host: str, slack: bool = True) -> int:
    """Serve Slack events and the JSON API on PORT until SIGINT or SIGTERM."""
    from werkzeug.serving import make_server

    from bot.wsgi import create_wsgi_app

    app = create_wsgi_app(settings, slack=slack)
    stop_requested = threading.Event()
    # The handlers go in before the port opens, so a SIGTERM that arrives as
    # soon as the port accepts connections still stops the server cleanly.
    _stop_on_signals(stop_requested.set)
    server = make_server(host, settings.port, app, threaded=True)
    threading.Thread(
        target=lambda: (stop_requested.wait(), server.shutdown()), daemon=True
    ).start()
    logger.info("Bot started: HTTP on %s:%d", host, server.port)
    try:
        server.serve_forever()
    finally:
        # Launches under way finish on their threads before the process
        # exits; following their instances does not.
        app.runtime.stop()
        logger.info("Bot stopped")
    return 0


def serve_socket_mode(settings: Settings, host: str) -> int:
    """Receive Slack over Socket Mode; serve the JSON API on PORT beside it."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from werkzeug.serving import make_server

    from bot.runtime import Runtime
    from bot.slack.app import create_app
    from bot.wsgi import WsgiApp

    runtime = Runtime(settings)
    bolt_app = create_app(runtime)
    runtime.prepare_in_background()
    server = make_server(host, settings.port, WsgiApp(runtime, None), threaded=True)
    threading.Thread(target=server.serve_forever, name="api", daemon=True).start()
    assert settings.slack_app_token is not None
    handler = SocketModeHandler(bolt_app, settings.slack_app_token.get_secret_value())
    stopped = threading.Event()
    _stop_on_signals(stopped.set)
    logger.info("Bot started: Socket Mode, JSON API on %s:%d", host, server.port)
    handler.connect()
    stopped.wait()
    handler.close()
    server.shutdown()
    runtime.stop()
    logger.info("Bot stopped")
    return 0


def _stop_on_signals(stop: Any) -> None:
    def handle(signum: int, _frame: Any) -> None:
        logger.info("Received %s; stopping", signal.Signals(signum).name)
        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


if __name__ == "__main__":
    sys.exit(main())
