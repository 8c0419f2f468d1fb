"""Error replies in the shape Daytona's API and daemon give them."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def error_reply(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if code:
        body.update(code=code, source="DAYTONA_DAEMON")
    return web.json_response(body, status=status, headers=headers)


def http_error(status: int, message: str) -> web.HTTPException:
    error = web.HTTPException(
        text=json.dumps({"statusCode": status, "message": message}), content_type="application/json"
    )
    error.set_status(status)
    return error


def timeout_reply() -> web.Response:
    return error_reply(408, "process execution timed out", code="PROCESS_EXECUTION_TIMEOUT")


def completed_reply() -> web.Response:
    return error_reply(410, "command already completed", code="COMMAND_ALREADY_COMPLETED")


def state_change_reply() -> web.Response:
    return error_reply(409, "Sandbox state change in progress")
