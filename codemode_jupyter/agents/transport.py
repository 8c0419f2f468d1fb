"""Between the MCP app and the wire: the bearer token, Host/Origin checks on every loopback
address, a watch on each request's connection (a client gone mid-run stops its program), the
listening socket (TCP_NODELAY), and stdio's stdout kept for the protocol."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_security(host: str, allow_remote: bool) -> Any:
    """Host/Origin checks (against DNS rebinding) for every loopback address, not only the
    three the SDK knows; off for a remote host, whose Host header is whatever name it has."""
    from mcp.server.transport_security import TransportSecuritySettings

    if allow_remote and not is_loopback(host):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = {host, "127.0.0.1", "localhost", "[::1]"}
    names = {f"[{name}]" if ":" in name and not name.startswith("[") else name for name in names}
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in sorted(names)],
        allowed_origins=[f"http://{name}:*" for name in sorted(names)],
    )


_GONE = "codemode.on_gone"  # ASGI scope key: what to do when the client's connection closes


def on_gone(ctx: Any, callback: Callable[[], None]) -> None:
    """Call `callback` if this HTTP request's client disconnects before its response ends."""
    request = ctx.request_context.request
    callbacks = None if request is None else request.scope.get(_GONE)
    if callbacks is not None:
        callbacks.append(callback)


async def watched(app: Any, scope: dict, receive: Any, send: Any) -> None:
    """Run the app for one request; once it has read the body, watch the connection: if the
    client goes before the response ends, the request's `on_gone` callbacks run."""
    callbacks: list[Callable[[], None]] = []
    scope[_GONE] = callbacks
    done = asyncio.Event()
    read = asyncio.Event()

    async def tee_receive() -> dict:
        message = await receive()
        body_read = message["type"] == "http.request" and not message.get("more_body", False)
        if body_read or message["type"] == "http.disconnect":
            read.set()
        return message

    async def tee_send(message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()
        await send(message)

    async def watch() -> None:
        await read.wait()
        while not done.is_set():
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not done.is_set():
            for callback in callbacks:
                callback()

    watcher = asyncio.create_task(watch())
    try:
        await app(scope, tee_receive, tee_send)
    finally:
        done.set()
        watcher.cancel()


async def unauthorized(send: Any) -> None:
    body = b'{"error": "unauthorized: send Authorization: Bearer <token>"}'
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="codemode"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextmanager
def protocol_stdout() -> Iterator[TextIO]:
    """The process's stdout as a stream only the MCP transport writes to; meanwhile
    sys.stdout and file descriptor 1 are stderr, so a tool's print (flushed or not, by
    Python or by a child process) never reaches the protocol's channel."""
    sys.stdout.flush()
    wire_fd, saved_fd = os.dup(1), os.dup(1)
    saved = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    wire = open(wire_fd, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed below
    try:
        yield wire
    finally:
        sys.stdout = saved
        wire.close()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections accepted from such a
    # socket, and without it each small response waits ~40 ms for the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock
