"""Delivery of allocation status to the requester: channel, then DM, then response_url.

The first message of an allocation goes to the conversation the requester
chose. The bot cannot post there when it is not a member, in a DM between
other people, or in an archived channel. Then it reports to the requester in
a DM instead. When even that fails, it uses the request's response_url,
which works in any conversation for 30 minutes after the request.

Every later status is a reply in the thread of the first message, and the
first message is updated to the current state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.allocations import StatusEvent
from bot.models import Allocation, SlackDestination
from bot.slack import messages

logger = logging.getLogger(__name__)

Respond = Callable[..., Any]

# slack_sdk raises SlackApiError for error responses, and lets timeouts and
# connection failures through as OSError (URLError and TimeoutError among them).
SLACK_FAILURES = (SlackClientError, OSError)


class SlackReporter:
    """Renders StatusEvents for one allocation request into Slack messages."""

    def __init__(
        self,
        client: WebClient,
        user_id: str,
        channel_id: str | None,
        respond: Respond | None = None,
        on_destination: Callable[[Allocation, SlackDestination], None] | None = None,
        allocation_id: str = "-",
    ):
        self.allocation_id = allocation_id  # for log lines, known before any event
        self.client = client
        self.user_id = user_id
        self.requested_channel_id = channel_id
        self.respond = respond
        self.on_destination = on_destination
        self.channel_id: str | None = None  # where the first message went
        self.thread_ts: str | None = None
        self.use_response_url = False
        self._dm_channel: str | None = None  # the DM's channel ID, once posted
        self.allocation: Allocation | None = None  # set by the first event

    def __call__(self, event: StatusEvent) -> None:
        allocation = event.allocation
        self.allocation = allocation
        if event.kind == "recorded":
            self._post_first_message(allocation)
            return
        text = {
            "launched": messages.launched,
            "running": messages.running,
            "failed": messages.failed,
        }[event.kind](allocation)
        self._reply(allocation, text)
        self._update_first_message(allocation)

    def report_problem(self, text: str) -> None:
        """Tell the requester about an error: in the thread once there is one."""
        if self.allocation is not None and self.thread_ts is not None:
            self._reply(self.allocation, text)
        else:
            self.send_ephemeral(text)

    def send_ephemeral(self, text: str) -> None:
        """Tell only the requester, through response_url or chat.postEphemeral."""
        if self._post_to_response_url(text):
            return
        if self.requested_channel_id:
            try:
                self.client.chat_postEphemeral(
                    channel=self.requested_channel_id, user=self.user_id, text=text
                )
                return
            except SLACK_FAILURES as error:
                logger.warning(
                    "Allocation %s: chat.postEphemeral failed: %s",
                    self.allocation_id,
                    _error_code(error),
                )
        self._post_dm(text)

    # First message and thread

    def _post_first_message(self, allocation: Allocation) -> None:
        blocks = messages.allocation_blocks(allocation)
        summary = messages.allocation_summary(allocation)
        channel = self.requested_channel_id
        if channel:
            ts, error = self._post(channel, summary, blocks)
            if ts is not None:
                self._remember(allocation, channel, ts)
                return
            logger.info(
                "Allocation %s: cannot post in %s (%s); reporting by DM",
                allocation.allocation_id,
                channel,
                error,
            )
        dm_blocks = blocks
        if channel:
            note = {"type": "mrkdwn", "text": messages.moved_to_dm(channel)}
            dm_blocks = [*blocks, {"type": "context", "elements": [note]}]
        ts, error = self._post(self.user_id, summary, dm_blocks)
        if ts is not None:
            self._remember(allocation, self._dm_channel or self.user_id, ts)
            return
        logger.warning(
            "Allocation %s: DM to the requester failed (%s); using response_url",
            allocation.allocation_id,
            error,
        )
        self.use_response_url = True
        self._respond(summary, blocks)

    def _remember(self, allocation: Allocation, channel: str, ts: str) -> None:
        self.channel_id = channel
        self.thread_ts = ts
        if self.on_destination is not None:
            destination = SlackDestination(
                channel_id=channel,
                thread_ts=ts,
                requested_channel_id=self.requested_channel_id,
            )
            try:
                self.on_destination(allocation, destination)
            except Exception:
                logger.exception(
                    "Allocation %s: could not record where it is reported",
                    allocation.allocation_id,
                )

    def _reply(self, allocation: Allocation, text: str) -> None:
        if self.use_response_url or self.channel_id is None:
            self._respond(text)
            return
        ts, error = self._post(self.channel_id, text, None, thread_ts=self.thread_ts)
        if ts is None:
            logger.warning(
                "Allocation %s: thread reply failed (%s); using response_url",
                allocation.allocation_id,
                error,
            )
            self._respond(text)

    def _update_first_message(self, allocation: Allocation) -> None:
        if self.use_response_url or self.channel_id is None or self.thread_ts is None:
            return
        try:
            self.client.chat_update(
                channel=self.channel_id,
                ts=self.thread_ts,
                text=messages.allocation_summary(allocation),
                blocks=messages.allocation_blocks(allocation),
            )
        except SLACK_FAILURES as error:
            logger.warning(
                "Allocation %s: could not update its message (%s)",
                allocation.allocation_id,
                _error_code(error),
            )

    # Transport

    def _post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        thread_ts: str | None = None,
    ) -> tuple[str | None, str | None]:
        """Post a message; return its ts, or None and the Slack error code."""
        try:
            response = self.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SLACK_FAILURES as error:
            return None, _error_code(error)
        if channel == self.user_id:
            self._dm_channel = response.get("channel")
        return response.get("ts"), None

    def _post_dm(self, text: str) -> None:
        try:
            self.client.chat_postMessage(channel=self.user_id, text=text)
        except SLACK_FAILURES as error:
            logger.warning(
                "Allocation %s: DM to the requester failed: %s",
                self.allocation_id,
                _error_code(error),
            )

    def _respond(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        if not self._post_to_response_url(text, blocks):
            logger.error(
                "Allocation %s: no way left to reach %s; a report was dropped",
                self.allocation_id,
                self.user_id,
            )

    def _post_to_response_url(
        self, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> bool:
        """Post an ephemeral message to the response_url; return whether it arrived."""
        if self.respond is None:
            return False
        try:
            response = self.respond(
                text=text,
                blocks=blocks,
                response_type="ephemeral",
                replace_original=False,
            )
        except Exception as error:  # the webhook client raises OSError and more
            logger.warning(
                "Allocation %s: post to response_url failed: %s",
                self.allocation_id,
                type(error).__name__,
            )
            return False
        # Bolt's Respond returns the webhook response instead of raising.
        status = getattr(response, "status_code", 200)
        if status != 200:
            logger.warning(
                "Allocation %s: response_url returned HTTP %s",
                self.allocation_id,
                status,
            )
            return False
        return True


def _error_code(error: Exception) -> str:
    if isinstance(error, SlackApiError):
        return str(error.response.get("error", "unknown_error"))
    return type(error).__name__
