"""The thread pools that run the work after a Slack acknowledgement."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

# Requests recorded and launched at once per process; each takes seconds.
# NOTE: a request waiting for one of these threads exists only in memory, so
# a process that stops then loses it without telling the requester.
LAUNCH_WORKERS = 16
# Allocations followed to `running` at once per process; each sleeps between
# describes for up to STATUS_TIMEOUT_SECONDS, so there are many of them.
FOLLOW_WORKERS = 64


class Workers(Executor):
    """Two pools: one records and launches, the other follows instances.

    Following occupies a thread for as long as instances take to start, so on
    one pool a burst of allocations could keep the next acknowledged request
    from even being recorded. `submit` goes to the launch pool, so Bolt can
    use this object as its listener executor.
    """

    def __init__(
        self, launch_workers: int = LAUNCH_WORKERS, follow_workers: int = FOLLOW_WORKERS
    ):
        self.launch_pool = ThreadPoolExecutor(
            launch_workers, thread_name_prefix="launch"
        )
        self.follow_pool = ThreadPoolExecutor(
            follow_workers, thread_name_prefix="follow"
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.launch_pool.submit(fn, *args, **kwargs)

    def follow(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.follow_pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop both pools; with `wait`, return once every allocation has settled.

        The launch pool stops first, because its tasks hand work to the
        follow pool.
        """
        self.launch_pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.follow_pool.shutdown(wait=wait, cancel_futures=cancel_futures)
