"""Acknowledgement latency of a signed /allocate, dispatched in process.

Compares the product's Bolt app with a bare Bolt app whose listener only
acknowledges, in the same run. Both verify the signature and parse the body.
The product also checks the text against the policy and submits the request
for the work after the acknowledgement. The benchmark replaces that work with
a function that does nothing.

Two product rows are printed. "product" hands the work to an executor that
drops it, so only the path up to the acknowledgement is timed. "+pool" uses
the real thread pool: its worker threads wake up and take the GIL, which
can show in the tail of the distribution even though their work is empty.

Run: python -m benchmarks.ack_latency [--requests N]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import time
from concurrent.futures import Executor, Future
from typing import Any
from urllib.parse import urlencode

from slack_bolt import App, BoltRequest
from slack_sdk import WebClient

from bot.config import Settings
from bot.runtime import Runtime
from bot.sandbox.slack_standin import SlackStandin
from bot.slack import commands
from bot.slack.app import create_app

SECRET = "benchmark-signing-secret"
TOKEN = "xoxb-benchmark"


def signed_request(text: str, index: int) -> BoltRequest:
    body = urlencode(
        {
            "token": "unused",
            "team_id": "T0000000001",
            "channel_id": "C0000000001",
            "channel_name": "general",
            "user_id": "U0000000001",
            "user_name": "ada",
            "command": "/allocate",
            "text": text,
            "response_url": "http://127.0.0.1:9/response",
            "trigger_id": f"trigger-{index}",
            "api_app_id": "A0000000001",
        }
    )
    timestamp = str(int(time.time()))
    base = f"v0:{timestamp}:{body}".encode()
    signature = "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    headers = {
        "content-type": ["application/x-www-form-urlencoded"],
        "x-slack-request-timestamp": [timestamp],
        "x-slack-signature": [signature],
    }
    return BoltRequest(body=body, headers=headers)


def bare_app(api_url: str) -> App:
    app = App(
        client=WebClient(token=TOKEN, base_url=api_url),
        signing_secret=SECRET,
        process_before_response=True,
        token_verification_enabled=False,
    )

    @app.command("/allocate")
    def acknowledge(ack: Any) -> None:
        ack()

    return app


class DroppingExecutor(Executor):
    """Accepts work and never runs it."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(None)
        return future


def product_app(api_url: str, executor: Executor | None = None) -> App:
    settings = Settings(
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=api_url,
    )
    return create_app(
        Runtime(settings), token_verification=False, listener_executor=executor
    )


def measure(apps: dict[str, App], count: int) -> dict[str, list[float]]:
    """Dispatch `count` signed commands to each app, taking turns request by request.

    Taking turns exposes every app to the same machine load, which varies
    from second to second on a shared host.
    """
    requests = [signed_request("t3.2xlarge 1", i) for i in range(count)]
    for app in apps.values():
        for request in requests[:100]:  # warm-up
            app.dispatch(request)
    durations: dict[str, list[float]] = {name: [] for name in apps}
    for request in requests:
        for name, app in apps.items():
            start = time.perf_counter()
            response = app.dispatch(request)
            durations[name].append(time.perf_counter() - start)
            if response.status != 200:
                raise SystemExit(f"{name} returned {response.status}: {response.body}")
    return durations


def summarize(name: str, durations: list[float]) -> tuple[float, float]:
    ordered = sorted(durations)
    median = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(f"{name:<8} median {median:6.3f} ms   p99 {p99:6.3f} ms   n={len(ordered)}")
    return median, p99


def skip_allocation(*_: Any) -> None:
    """Stand in for the work that runs after the acknowledgement."""


def main() -> None:
    commands.run_allocation = skip_allocation  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    # Bolt calls auth.test once, on the first request, and the stand-in serves it.
    with SlackStandin(TOKEN, SECRET) as standin:
        apps = {
            "bare": bare_app(standin.api_url),
            "product": product_app(standin.api_url, DroppingExecutor()),
            "+pool": product_app(standin.api_url),
        }
        durations = measure(apps, args.requests)
    bare_median, _ = summarize("bare", durations["bare"])
    median, p99 = summarize("product", durations["product"])
    summarize("+pool", durations["+pool"])
    print(f"ratio    median {median / bare_median:.2f} × bare (target ≤ 1.5)")
    print(f"target   p99 under 2 ms: {'met' if p99 < 2 else 'missed'}")


if __name__ == "__main__":
    main()
