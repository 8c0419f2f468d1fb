"""What goes wrong with Daytona: the backend's errors, and which SDK failures are worth a retry."""

from __future__ import annotations

import asyncio
import contextlib

from codemode_jupyter.backends.base import BackendConfigError

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class DaytonaBackendError(RuntimeError):
    """Daytona could not do what the backend needed; the message says what and why."""


class DaytonaAuthError(DaytonaBackendError, BackendConfigError):
    """The API key is missing or rejected. Never retried."""


class DaytonaTimeout(DaytonaBackendError):
    """A wait on Daytona ran out of time (the work it waited for may carry on)."""


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK or generated-client exception, if there is one."""
    for err in chain(exc):
        for attr in ("status_code", "status"):
            value = getattr(err, attr, None)
            if isinstance(value, int):
                return value
    return None


def retry_after(exc: BaseException) -> float | None:
    for err in chain(exc):
        headers = getattr(err, "headers", None) or {}
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            value = headers.get("Retry-After") or headers.get("retry-after")
            if value is not None:
                return max(0.0, float(value))
    return None


def is_auth_error(exc: BaseException) -> bool:
    from daytona import DaytonaAuthenticationError

    auth_types = (DaytonaAuthError, DaytonaAuthenticationError)
    return isinstance(exc, auth_types) or http_status(exc) == 401


def is_not_found(exc: BaseException) -> bool:
    from daytona import DaytonaNotFoundError

    return isinstance(exc, DaytonaNotFoundError) or http_status(exc) == 404


def is_transient(exc: BaseException) -> bool:
    """Worth another try: rate limits, server errors, timeouts, connections that failed."""
    import aiohttp
    from daytona import DaytonaConnectionError, DaytonaTimeoutError

    if is_auth_error(exc):
        return False
    status = http_status(exc)
    if status is not None:
        return status in _TRANSIENT_STATUS
    network = (
        asyncio.TimeoutError,
        TimeoutError,
        ConnectionError,
        aiohttp.ClientError,
        DaytonaConnectionError,
        DaytonaTimeoutError,
    )
    return any(isinstance(err, network) for err in chain(exc))
