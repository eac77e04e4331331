"""`python -m bot` and gunicorn as processes, against moto and the Slack stand-in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bot.sandbox.slack_standin import SlackStandin

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "xoxb-process-test"
SECRET = "process-test-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def standin() -> Iterator[SlackStandin]:
    with SlackStandin(TOKEN, SECRET) as standin:
        yield standin


def bot_environment(moto_url: str, standin: SlackStandin, port: int) -> dict[str, str]:
    removed = ("AWS_PROFILE", "SLACK_APP_TOKEN", "HTTP_PROXY", "HTTPS_PROXY")
    environment = {k: v for k, v in os.environ.items() if k not in removed}
    environment.update(
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": standin.api_url,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "process-test",
            "AWS_SECRET_ACCESS_KEY": "process-test",
            "AWS_REGION": "us-east-1",
            "ALLOCATIONS_TABLE": f"process-test-{port}",
            "STATUS_POLL_SECONDS": "0.2",
            "PORT": str(port),
        }
    )
    return environment


def wait_until_serving(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the bot exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on port {port} within 60 s")


def serve_until_sigterm(
    argv: list[str],
    moto_url: str,
    standin: SlackStandin,
    port: int,
    while_serving: Callable[[], None],
) -> tuple[int, str]:
    """Start the server, run `while_serving`, send SIGTERM; return code and output."""
    process = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=bot_environment(moto_url, standin, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(process, port)
        while_serving()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    return process.returncode, output


def run_allocation(standin: SlackStandin, port: int) -> None:
    standin.request_url = f"http://127.0.0.1:{port}/slack/events"
    response = standin.send_command("t3.micro 1")
    assert response.status == 200
    standin.wait_for(
        lambda call: (
            call.method == "chat.postMessage"
            and "running" in str(call.args.get("text"))
        ),
        timeout=60,
    )


def instance_types(moto_url: str) -> list[str]:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)
    reservations = ec2.describe_instances()["Reservations"]
    return [i["InstanceType"] for r in reservations for i in r["Instances"]]


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "bot", "--host", "127.0.0.1"],
        # gunicorn.conf.py in the working directory sets the rest.
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--bind",
            "127.0.0.1:{port}",
            "bot.wsgi:create_wsgi_app()",
        ],
    ],
    ids=["python-m-bot", "gunicorn"],
)
def test_server_allocates_and_stops_on_sigterm(moto_url, standin, command):
    port = free_port()
    argv = [part.format(port=port) for part in command]
    returncode, output = serve_until_sigterm(
        argv, moto_url, standin, port, lambda: run_allocation(standin, port)
    )
    assert returncode == 0, output
    assert "t3.micro" in instance_types(moto_url)
    assert "alloc-" in output
    assert TOKEN not in output
    assert SECRET not in output
    assert "ada@example.com" not in output


def test_server_logs_start_and_stop(moto_url, standin):
    port = free_port()
    argv = [sys.executable, "-m", "bot", "--host", "127.0.0.1"]
    _, output = serve_until_sigterm(argv, moto_url, standin, port, lambda: None)
    assert f"Bot started: HTTP on 127.0.0.1:{port}" in output
    assert "Bot stopped" in output


@pytest.mark.parametrize("missing", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"])
def test_missing_credential_names_variable(missing):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    environment.update({"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET})
    del environment[missing]
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert missing in result.stderr
    assert "python -m bot sandbox" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
