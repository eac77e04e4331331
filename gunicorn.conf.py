"""gunicorn settings for `gunicorn 'bot.wsgi:create_wsgi_app()'`.

gunicorn reads this file from the working directory. Each worker builds its
own app, and with it its own thread pools and AllocationService.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '3000')}"
# Threads, not processes, carry the concurrency: the work after each Slack
# acknowledgement runs on the app's own thread pools.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 8
# Launches under way finish within this time on SIGTERM.
graceful_timeout = 30


def worker_exit(server, worker):
    """Stop following instances, so the worker exits once launches finish.

    Without this, the interpreter's exit waits for every follow thread, up
    to STATUS_TIMEOUT_SECONDS, and gunicorn kills the worker first.
    """
    runtime = getattr(getattr(worker, "wsgi", None), "runtime", None)
    if runtime is not None:
        runtime.stop()
