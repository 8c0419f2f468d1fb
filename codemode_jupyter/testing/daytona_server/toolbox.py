"""The toolbox API inside a sandbox: files, one-shot execute and code-run, sessions and their
commands, a command's logs over a websocket, its input.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import shlex
import subprocess

from aiohttp import web

from codemode_jupyter.testing.daytona_server.replies import (
    completed_reply,
    error_reply,
    http_error,
    timeout_reply,
)
from codemode_jupyter.testing.daytona_server.sandbox import Command, Sandbox, kill_tree


class ToolboxRoutes:
    """The toolbox routes of DaytonaLoopbackServer (server.py)."""

    async def home_dir(self, request: web.Request) -> web.Response:
        return web.json_response({"dir": self._lookup(request, started=True).runner.home})

    async def bulk_upload(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        reader = await request.multipart()
        paths: dict[str, str] = {}
        async for part in reader:
            name = part.name or ""
            if name.endswith(".path"):
                paths[name[: -len(".path")]] = (await part.read()).decode()  # type: ignore[union-attr]
            elif name.endswith(".file"):
                key = name[: -len(".file")]
                target = paths.get(key) or part.filename or ""
                try:
                    host = sandbox.runner.host_path(target)
                except PermissionError as exc:
                    return error_reply(400, str(exc))
                host.parent.mkdir(parents=True, exist_ok=True)
                host.write_bytes(await part.read())  # type: ignore[union-attr]
        return web.Response(status=200)

    async def execute(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        body = await request.json()
        command = body["command"]
        if body.get("cwd"):
            command = f"cd {shlex.quote(body['cwd'])} && {command}"
        code, output = await self._run_once(sandbox, command, body.get("envs"), body.get("timeout"))
        if code is None:
            return timeout_reply()
        return web.json_response({"exitCode": code, "result": output})

    async def code_run(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        body = await request.json()
        encoded = base64.b64encode(body["code"].encode()).decode()
        argv = " ".join(shlex.quote(a) for a in body.get("argv") or [])
        command = f"printf '%s' '{encoded}' | base64 -d | python3 -u - {argv}"
        code, output = await self._run_once(sandbox, command, body.get("envs"), body.get("timeout"))
        if code is None:
            return timeout_reply()
        return web.json_response({"exitCode": code, "result": output, "artifacts": {"charts": []}})

    async def _run_once(
        self, sandbox: Sandbox, command: str, envs: dict | None, timeout: float | None
    ) -> tuple[int | None, str]:
        proc = sandbox.runner.popen(command, env=envs, merge=True)

        def wait() -> tuple[int | None, str]:
            try:
                out, _ = proc.communicate(timeout=timeout or 600)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                proc.communicate()
                return None, ""
            return proc.returncode, out.decode("utf-8", "replace")

        return await asyncio.get_running_loop().run_in_executor(None, wait)

    async def create_session(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        session_id = (await request.json())["sessionId"]
        if session_id in sandbox.sessions:
            return error_reply(409, f"session {session_id} already exists")
        sandbox.sessions[session_id] = {}
        return web.Response(status=201)

    def _session(self, request: web.Request) -> tuple[Sandbox, dict[str, Command]]:
        sandbox = self._lookup(request, started=True)
        session = sandbox.sessions.get(request.match_info["session"])
        if session is None:
            raise http_error(404, f"session {request.match_info['session']} not found")
        return sandbox, session

    def _command(self, request: web.Request) -> Command:
        _, session = self._session(request)
        cmd = session.get(request.match_info["cmd"])
        if cmd is None:
            raise http_error(404, f"command {request.match_info['cmd']} not found")
        return cmd

    async def list_sessions(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        return web.json_response(
            [
                {"sessionId": sid, "commands": [c.to_json() for c in cmds.values()]}
                for sid, cmds in sandbox.sessions.items()
            ]
        )

    async def get_session(self, request: web.Request) -> web.Response:
        _, session = self._session(request)
        return web.json_response(
            {
                "sessionId": request.match_info["session"],
                "commands": [c.to_json() for c in session.values()],
            }
        )

    async def delete_session(self, request: web.Request) -> web.Response:
        sandbox, session = self._session(request)
        for cmd in session.values():
            kill_tree(cmd.proc)
            # As the daemon does, answer once the command is dead: a client that deleted the
            # session may rely on its processes being gone.
            with contextlib.suppress(asyncio.TimeoutError, subprocess.TimeoutExpired):
                await asyncio.wait_for(asyncio.to_thread(cmd.proc.wait, 5), 6)
            if cmd.proc.returncode is not None:
                cmd.finish(cmd.proc.returncode)
            for ws in [w for w, c in sandbox.streams.items() if c is cmd]:
                await ws.close(code=1000)
        # Two deletes of one session may both have waited above: the second finds it gone.
        sandbox.sessions.pop(request.match_info["session"], None)
        return web.Response(status=204)

    async def session_exec(self, request: web.Request) -> web.Response:
        sandbox, session = self._session(request)
        body = await request.json()
        proc = sandbox.runner.popen(body["command"])
        cmd = Command(
            body["command"],
            proc,
            asyncio.get_running_loop(),
            echo=not body.get("suppressInputEcho", False),
        )
        session[cmd.id] = cmd
        if body.get("runAsync") or body.get("async"):
            return web.json_response({"cmdId": cmd.id}, status=202)
        while cmd.exit_code is None:
            await cmd.changed()
        return web.json_response(
            {
                "cmdId": cmd.id,
                "output": cmd.text(),
                "stdout": cmd.text(1),
                "stderr": cmd.text(2),
                "exitCode": cmd.exit_code,
            }
        )

    async def get_command(self, request: web.Request) -> web.Response:
        return web.json_response(self._command(request).to_json())

    async def command_logs(self, request: web.Request) -> web.StreamResponse:
        cmd = self._command(request)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response(
                {"output": cmd.text(), "stdout": cmd.text(1), "stderr": cmd.text(2)}
            )
        sandbox, _ = self._session(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sandbox.streams[ws] = cmd
        try:
            await self._follow(cmd, ws)
        finally:
            sandbox.streams.pop(ws, None)
        return ws

    async def _follow(self, cmd: Command, ws: web.WebSocketResponse) -> None:
        """Send the whole log so far, then what is added to it, until the session goes.

        Messages are reads of `log_read_size` bytes of the log, as Daytona's daemon sends
        them (so a message may end inside a marker or a UTF-8 character), or with
        `log_read_size=None` one marked chunk each. With `daemon_quirks` (the default) the
        daemon's other habits too: messages padded with NULs to a multiple of 1024 bytes, and
        the stream stays open after the command ends. Without, it closes (1000) once the
        command has ended and all is sent.
        """
        sent = 0
        while not ws.closed:
            while sent < len(cmd.log) and not ws.closed:
                end = self._read_end(cmd, sent)
                cut = self._log_cut(cmd, sent, end)
                if cut is not None:  # what was read so far goes out, then the connection dies
                    if cut > sent:
                        await ws.send_bytes(bytes(cmd.log[sent:cut]))
                    await ws.close(code=1011, message=b"injected fault: log stream dropped")
                    return
                await ws.send_bytes(self._pad(bytes(cmd.log[sent:end])))
                sent = end
            if not self.daemon_quirks and cmd.exit_code is not None and sent == len(cmd.log):
                await ws.close(code=1000)
                return
            await cmd.changed()

    def _read_end(self, cmd: Command, start: int) -> int:
        if self.log_read_size:
            return min(len(cmd.log), start + self.log_read_size)
        return cmd.units[bisect.bisect_right(cmd.units, start)]

    def _pad(self, message: bytes) -> bytes:
        # The daemon sends its whole read buffer: a short read (the log's end, which is
        # always a chunk's end) comes padded with NULs.
        if self.daemon_quirks and len(message) % 1024:
            message += b"\x00" * (1024 - len(message) % 1024)
        return message

    async def command_input(self, request: web.Request) -> web.Response:
        cmd = self._command(request)
        data = (await request.json())["data"]
        if cmd.exit_code is not None:
            return completed_reply()
        try:
            cmd.write_input(data)
        except OSError:  # BrokenPipeError among them: the command's stdin is gone
            return completed_reply()
        return web.Response(status=204)
