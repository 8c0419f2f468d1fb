"""The control plane's sandbox routes: create, list, get, start, stop, delete, and the idle
auto-stop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid

from aiohttp import web

from codemode_jupyter.testing.daytona_server.replies import (
    error_reply,
    http_error,
    now_stamp,
    state_change_reply,
)
from codemode_jupyter.testing.daytona_server.sandbox import ORG_ID, Runner, Sandbox, kill_tree


class SandboxRoutes:
    """The sandbox routes of DaytonaLoopbackServer (server.py)."""

    def _lookup(self, request: web.Request, *, started: bool = False) -> Sandbox:
        key = request.match_info["sid"]
        sandbox = self.sandboxes.get(key) or next(
            (sb for sb in self.sandboxes.values() if sb.dto["name"] == key), None
        )
        if sandbox is None:
            raise http_error(404, f"Sandbox with ID or name {key} not found")
        sandbox.last_activity = time.monotonic()
        if started and not sandbox.started:
            state = sandbox.dto["state"]
            raise http_error(409, f"Sandbox {sandbox.id} is not started (state {state})")
        return sandbox

    async def create_sandbox(self, request: web.Request) -> web.Response:
        body = await request.json()
        sandbox_id = uuid.uuid4().hex[:12]
        root = self.root / sandbox_id
        runner = Runner(root, network=self.network, isolate=self.isolate)
        now = now_stamp()
        dto = {
            "id": sandbox_id,
            "organizationId": ORG_ID,
            "name": body.get("name") or sandbox_id,
            "snapshot": body.get("snapshot") or "loopback-default",
            "user": body.get("user") or "daytona",
            "env": body.get("env") or {},
            "labels": body.get("labels") or {},
            "public": bool(body.get("public", False)),
            "networkBlockAll": not self.network,
            "kvm": False,
            "target": body.get("target") or "loopback",
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": "started",
            "desiredState": "started",
            "autoStopInterval": body.get("autoStopInterval", 15),
            "autoArchiveInterval": body.get("autoArchiveInterval", 10080),
            "autoDeleteInterval": body.get("autoDeleteInterval", -1),
            "createdAt": now,
            "updatedAt": now,
            "toolboxProxyUrl": f"{self.base_url}/toolbox",
        }
        self.sandboxes[sandbox_id] = Sandbox(dto, root, runner)
        return web.json_response(dto)

    async def list_sandboxes(self, request: web.Request) -> web.Response:
        wanted = json.loads(request.query.get("labels") or "{}")
        items = [
            sb.dto
            for sb in self.sandboxes.values()
            if all(sb.dto["labels"].get(k) == v for k, v in wanted.items())
        ]
        return web.json_response({"items": items, "nextCursor": None})

    async def get_sandbox(self, request: web.Request) -> web.Response:
        return web.json_response(self._lookup(request).dto)

    async def delete_sandbox_route(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        await self._destroy(sandbox.id)
        return web.json_response(sandbox.dto)

    async def start_sandbox_route(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        if sandbox.dto["state"] == "destroying":
            return state_change_reply()
        sandbox.dto.update(state="started", desiredState="started", updatedAt=now_stamp())
        return web.json_response(sandbox.dto)

    async def stop_sandbox_route(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        if sandbox.dto["state"] == "destroying":
            return state_change_reply()
        await self._stop(sandbox.id)
        return web.json_response(sandbox.dto)

    async def toolbox_proxy_url(self, request: web.Request) -> web.Response:
        self._lookup(request)
        return web.json_response({"url": f"{self.base_url}/toolbox"})

    async def no_events(self, request: web.Request) -> web.Response:
        # No socket.io: the SDK falls back to polling, which never waits here because
        # every state change is immediate.
        return error_reply(404, "events are not served by the loopback server")

    async def _destroy(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.dto["state"] == "destroying":
            return
        await self._halt(sandbox)
        with self._lock:
            linger = self._destroying_seconds
        if linger > 0:
            sandbox.dto.update(state="destroying", desiredState="destroyed", updatedAt=now_stamp())
            asyncio.get_running_loop().call_later(linger, self._gone, sandbox_id)
        else:
            self._gone(sandbox_id)

    def _gone(self, sandbox_id: str) -> None:
        """The end of a deletion: the record and the files go."""
        sandbox = self.sandboxes.pop(sandbox_id, None)
        if sandbox is None:
            return
        sandbox.dto.update(state="destroyed", desiredState="destroyed", updatedAt=now_stamp())
        sandbox.runner.close()
        shutil.rmtree(sandbox.root, ignore_errors=True)

    async def _stop(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is not None:
            await self._halt(sandbox)
            sandbox.dto.update(state="stopped", desiredState="stopped", updatedAt=now_stamp())

    async def _fail(self, sandbox_id: str, reason: str) -> None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is not None:
            await self._halt(sandbox)
            sandbox.dto.update(state="error", errorReason=reason, updatedAt=now_stamp())

    async def _halt(self, sandbox: Sandbox) -> None:
        """Kill every process and cut every log stream, as a stopping machine would."""
        for cmd in sandbox.commands():
            kill_tree(cmd.proc)
        sandbox.sessions.clear()
        for ws in list(sandbox.streams):
            await ws.close(code=1011, message=b"sandbox is no longer running")

    async def _auto_stop_loop(self) -> None:
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for sandbox in list(self.sandboxes.values()):
                minutes = sandbox.dto.get("autoStopInterval") or 0
                limit = minutes * self.auto_stop_seconds_per_minute
                if sandbox.started and limit > 0 and now - sandbox.last_activity > limit:
                    await self._stop(sandbox.id)
