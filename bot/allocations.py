"""The allocation use cases shared by the Slack bot, the JSON API and Lambda.

An allocation goes through: validate (no AWS), plan (type, AMI, zone), record
in the ledger with a conditional write, launch with one RunInstances, then
follow the instances until they run or fail. Each step that changes the
state emits a StatusEvent; adapters render those events for their users.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bot.config import Settings
from bot.errors import (
    AllocationError,
    AllocationNotFound,
    AwsUnavailable,
    IdempotencyConflict,
)
from bot.ledger import Ledger
from bot.models import (
    Allocation,
    AllocationRequest,
    AllocationState,
    Failure,
    Instance,
    LaunchPlan,
    SlackDestination,
    utc_now,
)
from bot.policy import Policy
from bot.provisioning import Provisioner

logger = logging.getLogger(__name__)

EventKind = Literal["recorded", "launched", "running", "failed"]

# A `requested` record older than this was left by a process that stopped
# before launching. A launch takes seconds, so five minutes leaves a wide margin.
STALLED_AFTER_SECONDS = 300

# Characters outside the set the AWS tagging guidelines allow in any service.
TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]")

# Failure code of an allocation whose instances did not run in time; they
# may still start, so refresh() keeps checking them.
STATUS_TIMEOUT = "status_timeout"

# EC2 states after which an instance will not become `running`.
DEAD_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@dataclass(frozen=True)
class StatusEvent:
    """A change in an allocation that the requester should hear about."""

    kind: EventKind
    allocation: Allocation


EventSink = Callable[[StatusEvent], None]


def _ignore(event: StatusEvent) -> None:
    pass


def allocation_id_for(idempotency_key: str | None) -> str:
    """Return the allocation ID: derived from the key, so duplicates collide."""
    if idempotency_key is None:
        return "alloc-" + secrets.token_hex(8)
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return "alloc-" + digest[:16]


def fingerprint(request: AllocationRequest) -> str:
    """Return a hash of what was requested, to spot a key reused for another request."""
    parts = [
        request.instance_type,
        str(request.quantity),
        request.purpose or "",
        request.requester.source,
        request.requester.user_id or request.requester.name or "",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class AllocationService:
    """Validates, records, launches and follows allocations."""

    def __init__(
        self,
        settings: Settings,
        provisioner: Provisioner | None = None,
        ledger: Ledger | None = None,
        policy: Policy | None = None,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.provisioner = provisioner or Provisioner(settings)
        self.ledger = ledger or Ledger(settings)
        self.policy = policy or Policy(settings)
        # Set when the process stops: following ends at the next poll, and the
        # record keeps its last state for `refresh` to bring up to date.
        self.stopping = threading.Event()
        self._sleep = sleep or self.stopping.wait
        self._monotonic = monotonic

    # Steps

    def submit(
        self, request: AllocationRequest, idempotency_key: str | None = None
    ) -> tuple[Allocation, bool]:
        """Check, plan and record a request without launching anything.

        Returns the record and whether this call created it. A request whose
        idempotency key was seen before returns the first record and False,
        also when both arrive at once on different processes, because only
        one conditional write can succeed.
        """
        self.policy.check_instance_type(request.instance_type)
        self.policy.check_count(request.quantity)
        allocation_id = allocation_id_for(idempotency_key)
        request_print = fingerprint(request)
        if idempotency_key is not None:
            existing = self.ledger.get(allocation_id)
            if existing is not None:
                return self._duplicate(existing, request_print), False
        plan = self.provisioner.plan(request.instance_type)
        allocation = _new_allocation(
            allocation_id, request, plan, self.settings.aws_region
        )
        allocation.request_fingerprint = request_print
        if not self.ledger.insert(allocation):
            existing = self.ledger.get(allocation_id)
            if existing is None:  # pragma: no cover - the winner cannot vanish
                raise AllocationNotFound(f"Allocation {allocation_id} disappeared")
            return self._duplicate(existing, request_print), False
        logger.info(
            "Allocation %s recorded: %d x %s for %s",
            allocation_id,
            request.quantity,
            request.instance_type,
            request.requester.user_id or request.requester.source,
        )
        return allocation, True

    def launch(
        self, allocation: Allocation, on_event: EventSink = _ignore
    ) -> Allocation:
        """Launch the recorded allocation with one RunInstances call.

        On an error the record is marked failed, a `failed` event is emitted
        and the error is raised with `allocation_id` set. Once EC2 has
        launched, a failure to save the record is logged and not raised: the
        `launched` event still carries the instance IDs, and the tags link
        the instances back to the record (see reconcile).
        """
        tags = self._tags(allocation)
        try:
            plan = self.provisioner.plan(allocation.instance_type)
            instances = self.provisioner.launch(
                plan, allocation.quantity, allocation.allocation_id, tags
            )
        except AllocationError as error:
            self._fail(allocation, error, on_event)
            error.allocation_id = allocation.allocation_id
            raise
        except Exception as unexpected:
            # For example a response botocore cannot parse. EC2 may have
            # launched, and only the AllocationId tag can show it.
            logger.exception(
                "Allocation %s: RunInstances failed unexpectedly",
                allocation.allocation_id,
            )
            tag = f"AllocationId={allocation.allocation_id}"
            error = AwsUnavailable(
                "launch_outcome_unknown",
                "The launch failed in an unexpected way; instances may exist",
                hint=f"Look for instances tagged {tag} in the EC2 console, "
                "and tell the bot's operator",
            )
            self._fail(allocation, error, on_event)
            error.allocation_id = allocation.allocation_id
            raise error from unexpected
        allocation.instances = instances
        allocation.state = AllocationState.PENDING
        # The zone may differ from the plan's first when that one had no capacity.
        zones = {i.availability_zone for i in instances if i.availability_zone}
        if len(zones) == 1:
            allocation.availability_zone = zones.pop()
        logger.info(
            "Allocation %s launched %s",
            allocation.allocation_id,
            ", ".join(i.instance_id for i in instances),
        )
        self._emit(on_event, "launched", allocation)
        self._save_or_log(allocation)
        return allocation

    def follow(
        self,
        allocation: Allocation,
        on_event: EventSink = _ignore,
        poll_seconds: float | None = None,
        timeout_seconds: float | None = None,
    ) -> Allocation:
        """Poll EC2 until every instance runs, one dies, or the timeout passes."""
        poll = poll_seconds or self.settings.status_poll_seconds
        timeout = timeout_seconds or self.settings.status_timeout_seconds
        deadline = self._monotonic() + timeout
        while not allocation.state.is_final:
            try:
                self._apply_states(allocation, on_event)
            except AllocationError as error:
                # A failed describe is not a failed allocation; try again.
                logger.warning(
                    "Allocation %s: describe failed with %s; will retry",
                    allocation.allocation_id,
                    error.code,
                )
            if allocation.state.is_final:
                break
            if self._monotonic() >= deadline:
                timeout_error = AllocationError(
                    f"The instances did not reach running within {int(timeout)} s",
                    hint="Check them in the EC2 console; they may still start",
                    code=STATUS_TIMEOUT,
                )
                self._fail(allocation, timeout_error, on_event)
                break
            self._sleep(poll)
            if self.stopping.is_set():
                logger.warning(
                    "Allocation %s: stopped following at state %s; the process is "
                    "stopping",
                    allocation.allocation_id,
                    allocation.state.value,
                )
                break
        return allocation

    def refresh(self, allocation_id: str) -> Allocation:
        """Return the record, updated from EC2 when it is not final yet.

        An allocation that failed only because its instances were slow to
        start is refreshed too, and becomes `running` once they are.
        """
        allocation = self.get(allocation_id)
        if allocation.state is AllocationState.REQUESTED:
            self.reconcile(allocation)
        timed_out = (
            allocation.state is AllocationState.FAILED
            and allocation.failure is not None
            and allocation.failure.code == STATUS_TIMEOUT
        )
        if timed_out:
            ids = [i.instance_id for i in allocation.instances]
            allocation.instances = self.provisioner.describe(ids)
            if all(i.state == "running" for i in allocation.instances):
                allocation.state = AllocationState.RUNNING
                allocation.failure = None
                logger.info("Allocation %s is running after all", allocation_id)
                self._save_or_log(allocation)
        elif allocation.state is AllocationState.PENDING:
            self._apply_states(allocation, _ignore)
        return allocation

    def reconcile(self, allocation: Allocation) -> bool:
        """Adopt instances tagged with the allocation's ID into a `requested` record.

        A record stays `requested` when its process stopped, or DynamoDB
        failed, right after RunInstances. Returns whether instances were found.
        """
        found = self.provisioner.find_instances(allocation.allocation_id)
        if not found:
            return False
        allocation.instances = found
        allocation.state = AllocationState.PENDING
        logger.warning(
            "Allocation %s: found %d launched instances not in its record",
            allocation.allocation_id,
            len(found),
        )
        self._save_or_log(allocation)
        return True

    def set_destination(
        self, allocation: Allocation, destination: SlackDestination
    ) -> None:
        """Record where the allocation is reported, once its first message is posted."""
        allocation.report_to = destination
        self.ledger.save(allocation)

    def get(self, allocation_id: str) -> Allocation:
        allocation = self.ledger.get(allocation_id)
        if allocation is None:
            raise AllocationNotFound(
                f"No allocation with ID {allocation_id}",
                hint="Check the ID in the message that reported it",
            )
        return allocation

    def allocate(
        self,
        request: AllocationRequest,
        idempotency_key: str | None = None,
        on_event: EventSink = _ignore,
        follow: bool = True,
    ) -> tuple[Allocation, bool]:
        """Run every step; a duplicate request returns the first record untouched.

        The one exception is a record that stayed `requested` for
        STALLED_AFTER_SECONDS, which means the process that recorded it
        stopped around the launch. The duplicate adopts the instances tagged
        with its ID if there are any, and launches otherwise. The launch
        reuses the ClientToken, which EC2 (not moto) uses to return the first
        launch instead of starting a second.
        """
        allocation, created = self.submit(request, idempotency_key)
        if not created and not self._claim_stalled(allocation):
            logger.info(
                "Duplicate request for allocation %s ignored", allocation.allocation_id
            )
            if allocation.state is AllocationState.REQUESTED:
                # Its first request may have launched without saving the result.
                self.reconcile(allocation)
            return allocation, False
        self._emit(on_event, "recorded", allocation)
        if created or not self.reconcile(allocation):
            self.launch(allocation, on_event)
        else:
            self._emit(on_event, "launched", allocation)
        if follow:
            self.follow(allocation, on_event)
        return allocation, True

    # Helpers

    def _claim_stalled(self, allocation: Allocation) -> bool:
        """Take over a record that was never launched; return whether this call did."""
        if allocation.state is not AllocationState.REQUESTED:
            return False
        age = (utc_now() - allocation.updated_at).total_seconds()
        if age < STALLED_AFTER_SECONDS:
            return False
        if not self.ledger.save_if_unchanged(allocation, allocation.updated_at):
            return False
        logger.warning(
            "Allocation %s was recorded %d s ago but never launched; launching it now",
            allocation.allocation_id,
            age,
        )
        return True

    def _duplicate(self, existing: Allocation, request_print: str) -> Allocation:
        if (
            existing.request_fingerprint
            and existing.request_fingerprint != request_print
        ):
            raise IdempotencyConflict(
                f"This idempotency key was already used for allocation "
                f"{existing.allocation_id} with a different request",
                hint="Use a new key for a new request",
            )
        return existing

    def _apply_states(self, allocation: Allocation, on_event: EventSink) -> None:
        ids = [i.instance_id for i in allocation.instances]
        described = self.provisioner.describe(ids)
        changed = _states(described) != _states(allocation.instances)
        allocation.instances = described
        dead = [i for i in described if i.state in DEAD_STATES]
        if dead:
            reasons = "; ".join(
                f"{i.instance_id} is {i.state}"
                + (f" ({i.state_reason})" if i.state_reason else "")
                for i in dead
            )
            error = AllocationError(
                f"Instances stopped while starting: {reasons}",
                hint="Try again, or try another instance type or zone",
                code="instance_stopped",
            )
            self._fail(allocation, error, on_event)
            return
        if described and all(i.state == "running" for i in described):
            allocation.state = AllocationState.RUNNING
            logger.info("Allocation %s is running", allocation.allocation_id)
            self._emit(on_event, "running", allocation)
            self._save_or_log(allocation)
        elif changed:
            self._save_or_log(allocation)

    def _fail(
        self, allocation: Allocation, error: AllocationError, on_event: EventSink
    ) -> None:
        allocation.state = AllocationState.FAILED
        allocation.failure = Failure(
            code=error.code,
            message=error.message,
            hint=error.hint,
            http_status=error.http_status,
        )
        logger.warning("Allocation %s failed: %s", allocation.allocation_id, error.code)
        self._emit(on_event, "failed", allocation)
        self._save_or_log(allocation)

    def _emit(
        self, on_event: EventSink, kind: EventKind, allocation: Allocation
    ) -> None:
        """Send an event to the adapter; a failure to report never stops the work."""
        try:
            on_event(StatusEvent(kind, allocation))
        except Exception:
            logger.exception(
                "Allocation %s: reporting the %s event failed",
                allocation.allocation_id,
                kind,
            )

    def _save_or_log(self, allocation: Allocation) -> bool:
        """Save the record; on failure log it with the instance IDs and go on.

        The next save writes the whole record again, and reconcile() finds
        instances by their tags, so a missed save loses nothing for good.
        """
        try:
            self.ledger.save(allocation)
        except AllocationError as error:
            logger.error(
                "Allocation %s: could not save state %s with instances %s (%s)",
                allocation.allocation_id,
                allocation.state.value,
                ", ".join(i.instance_id for i in allocation.instances) or "none",
                error.code,
            )
            return False
        return True

    def _tags(self, allocation: Allocation) -> dict[str, str]:
        requester = allocation.requester
        return {
            "Name": f"{self.settings.app_tag}-{allocation.allocation_id}",
            "AllocationId": allocation.allocation_id,
            "RequestedBy": tag_value(requester.user_id or requester.name or "api"),
            "ManagedBy": self.settings.app_tag,
        }


def tag_value(text: str) -> str:
    """Return `text` limited to the characters every AWS service accepts in tags.

    Letters, digits, spaces and `_ . : / = + - @` are allowed; anything else
    becomes `_`, and the value is cut to EC2's limit of 255 characters.
    """
    return TAG_UNSAFE.sub("_", text)[:255]


def _states(instances: list[Instance]) -> list[tuple[str, str]]:
    return [(i.instance_id, i.state) for i in instances]


def _new_allocation(
    allocation_id: str, request: AllocationRequest, plan: LaunchPlan, region: str
) -> Allocation:
    return Allocation(
        allocation_id=allocation_id,
        state=AllocationState.REQUESTED,
        instance_type=request.instance_type,
        quantity=request.quantity,
        purpose=request.purpose,
        requester=request.requester,
        report_to=request.report_to,
        region=region,
        availability_zone=plan.availability_zone,
        image_id=plan.image.image_id if plan.image else None,
        architecture=plan.image.architecture if plan.image else None,
    )
