"""Preview links to a port in a sandbox, and the proxy that serves them."""

from __future__ import annotations

import secrets
import time

from aiohttp import ClientSession, ClientTimeout, web

from codemode_jupyter.testing.daytona_server.replies import error_reply
from codemode_jupyter.testing.daytona_server.sandbox import Sandbox


class PreviewRoutes:
    """The preview routes of DaytonaLoopbackServer (server.py)."""

    async def preview_url(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        port = int(request.match_info["port"])
        return web.json_response(
            {
                "sandboxId": sandbox.id,
                "url": f"{self.base_url}/preview/{sandbox.id}/{port}/",
                "token": sandbox.preview_token,
            }
        )

    async def signed_preview_url(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        port = int(request.match_info["port"])
        expires = int(request.query.get("expiresInSeconds") or 60)
        token = secrets.token_urlsafe(16)
        self._signed[token] = (sandbox.id, port, time.time() + expires)
        return web.json_response(
            {
                "sandboxId": sandbox.id,
                "port": port,
                "token": token,
                "url": f"{self.base_url}/preview-signed/{token}/",
            }
        )

    async def preview_proxy(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandboxes.get(request.match_info["sid"])
        if sandbox is None:
            return error_reply(404, "sandbox not found")
        token = request.headers.get("X-Daytona-Preview-Token")
        if token != sandbox.preview_token and not self._authorized(request):
            return error_reply(401, "preview token required")
        return await self._forward(request, sandbox, int(request.match_info["port"]))

    async def signed_preview_proxy(self, request: web.Request) -> web.StreamResponse:
        entry = self._signed.get(request.match_info["token"])
        if entry is None or entry[2] < time.time():
            return error_reply(401, "invalid or expired signed preview URL")
        sandbox = self.sandboxes.get(entry[0])
        if sandbox is None:
            return error_reply(404, "sandbox not found")
        return await self._forward(request, sandbox, entry[1])

    async def _forward(self, request: web.Request, sandbox: Sandbox, port: int) -> web.Response:
        if not sandbox.started:
            return error_reply(502, "sandbox is not running")
        if not self.network:
            return error_reply(
                502,
                "sandbox network is isolated: start the server with --network "
                "to reach preview ports",
            )
        url = f"http://127.0.0.1:{port}/{request.match_info['tail']}"
        try:
            async with (
                ClientSession(timeout=ClientTimeout(total=30)) as client,
                client.request(
                    request.method, url, params=request.query, data=await request.read()
                ) as upstream,
            ):
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, body=body, content_type=upstream.content_type
                )
        except OSError as exc:
            return error_reply(502, f"nothing answers on port {port} in the sandbox: {exc}")
