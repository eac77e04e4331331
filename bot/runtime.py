"""The process-wide objects: settings and the allocation service, built lazily."""

from __future__ import annotations

import logging
import threading

from bot.allocations import AllocationService
from bot.config import Settings

logger = logging.getLogger(__name__)


class Runtime:
    """The process's one AllocationService, created on first use.

    Creating it builds no AWS client (clients are created on first call), so
    a Slack acknowledgement that reads the policy waits for no AWS call.
    """

    def __init__(self, settings: Settings, service: AllocationService | None = None):
        self.settings = settings
        self._service = service
        self._lock = threading.Lock()
        self._prepared = threading.Event()
        self.background: threading.Thread | None = None  # the start-up check

    @property
    def service(self) -> AllocationService:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    self._service = AllocationService(self.settings)
        return self._service

    def prepare(self) -> None:
        """Create the ledger table if needed and warm the instance type cache."""
        service = self.service
        service.ledger.ensure_table()
        service.provisioner.warm(self.settings.allowed_instance_types)
        self._prepared.set()

    def prepare_in_background(self) -> threading.Thread:
        """Run prepare() on a daemon thread, logging any failure."""

        def run() -> None:
            try:
                self.prepare()
            except Exception:
                logger.exception(
                    "Start-up check of AWS failed; allocations will retry on use"
                )

        thread = threading.Thread(target=run, name="prepare-aws", daemon=True)
        thread.start()
        self.background = thread
        return thread

    def stop(self) -> None:
        """Stop following instances; launches under way still finish."""
        if self._service is not None:
            self._service.stopping.set()

    def wait_prepared(self, timeout: float | None = None) -> bool:
        return self._prepared.wait(timeout)
