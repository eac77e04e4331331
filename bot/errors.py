"""The product's exceptions: each carries a code, a message for the requester,
a hint saying what to do next, and the HTTP status the JSON API returns."""

from __future__ import annotations


class AllocationError(Exception):
    """Base of every error the service reports to a requester."""

    code = "allocation_failed"
    http_status = 500
    allocation_id: str | None = (
        None  # set once the failure belongs to a recorded allocation
    )

    def __init__(
        self, message: str, *, hint: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code


class InvalidRequest(AllocationError):
    """The request itself is wrong; `fields` maps each bad field to its problem."""

    code = "invalid_request"
    http_status = 400

    def __init__(self, fields: dict[str, str], *, hint: str | None = None):
        self.fields = dict(fields)
        message = "; ".join(
            f"{name}: {problem}" for name, problem in self.fields.items()
        )
        super().__init__(message, hint=hint)


class NotAllowed(AllocationError):
    """Policy forbids the request (instance type or count)."""

    code = "not_allowed"
    http_status = 403


class AllocationNotFound(AllocationError):
    code = "not_found"
    http_status = 404


class IdempotencyConflict(AllocationError):
    """An idempotency key was reused for a different request."""

    code = "idempotency_key_reused"
    http_status = 409


class AwsRejected(AllocationError):
    """AWS refused the request (limits, capacity for this shape, permissions).

    Retrying the same call will not help, and the hint suggests what might.
    """

    http_status = 422

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
    ):
        super().__init__(message, hint=hint, code=code)
        if http_status is not None:
            self.http_status = http_status


class AwsUnavailable(AllocationError):
    """AWS could not be reached or failed on its side after retries."""

    http_status = 502

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
    ):
        super().__init__(message, hint=hint, code=code)
        if http_status is not None:
            self.http_status = http_status
