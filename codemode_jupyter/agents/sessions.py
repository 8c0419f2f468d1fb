"""The agents' Code Mode sessions: one per client (its own variables), or one shared.

A client is an MCP session: the `Mcp-Session-Id` of a Streamable HTTP client that made the
`initialize` handshake. Each gets a session named `{prefix}-1`, `{prefix}-2`, ... in the order
clients first run a program, with a runner of its own (its programs run one at a time, in
order; different clients' programs run side by side). The one client of a stdio server,
requests that carry no session (the stateless 2026-07-28 HTTP protocol) and `shared=True` use
the one session named `prefix`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from codemode_jupyter.agents.runner import AgentRunner, SessionSource
from codemode_jupyter.engine.session import CodeMode

#: Makes the session of a new client, given its name (`agent-1`); None: clients share one.
SessionFactory = Callable[[str], CodeMode]
#: Sessions of clients the server keeps at most; the oldest idle one is closed for a new one.
MAX_CLIENT_SESSIONS = 16


class AgentSessions:
    """Runners by client. `make_runner(name, source)` builds a session's runner; sessions
    `factory` makes are closed when their client ends or the server stops if `own` is true."""

    def __init__(
        self,
        shared: SessionSource,
        make_runner: Callable[[str, SessionSource], AgentRunner],
        *,
        factory: SessionFactory | None = None,
        prefix: str = "agent",
        own: bool = False,
        max_sessions: int = MAX_CLIENT_SESSIONS,
    ) -> None:
        self.prefix = prefix
        self.factory = factory
        self._make_runner = make_runner
        self._own = own
        self._max = max_sessions
        self.shared = make_runner(prefix, shared)
        self._clients: OrderedDict[str, AgentRunner] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    @property
    def per_client(self) -> bool:
        return self.factory is not None

    def runner_for(self, client: str | None) -> AgentRunner:
        """The runner of `client`'s session (made on its first program)."""
        if client is None or self.factory is None:
            return self.shared
        evicted = None
        with self._lock:
            runner = self._clients.get(client)
            if runner is None:
                if len(self._clients) >= self._max:
                    evicted = self._pop_idle()
                self._count += 1
                name = f"{self.prefix}-{self._count}"
                runner = self._make_runner(name, self.factory(name))
                self._clients[client] = runner
            self._clients.move_to_end(client)
        if evicted is not None:
            self._end(evicted)
        return runner

    def _pop_idle(self) -> AgentRunner | None:
        for key, runner in self._clients.items():
            if runner.idle:
                return self._clients.pop(key)
        return None

    def release(self, client: str) -> None:
        """The client ended its MCP session: its programs stop, its session closes (if ours)."""
        with self._lock:
            runner = self._clients.pop(client, None)
        if runner is not None:
            self._end(runner)

    def _end(self, runner: AgentRunner) -> None:
        runner.stop()
        if self._own:
            runner.session().close()

    def runners(self) -> list[AgentRunner]:
        with self._lock:
            return [self.shared, *self._clients.values()]

    def sessions(self) -> dict[str, CodeMode]:
        """The agents' sessions by name (the shared one once it has run a program)."""
        found = {}
        for runner in self.runners():
            if runner is not self.shared or runner.started:
                found[runner.name] = runner.session()
        return found

    def stop(self, timeout: float = 10.0) -> None:
        for runner in self.runners():
            runner.stop(timeout)
        with self._lock:
            ended, self._clients = list(self._clients.values()), OrderedDict()
        if self._own:
            for runner in ended:
                runner.session().close()


def sibling(cm: CodeMode) -> SessionFactory | None:
    """A factory of sessions made like `cm` (same backend, options, tools, limits), or None
    when `cm` was given a Backend object, which cannot be shared."""
    from codemode_jupyter.backends import create_backend

    backend = cm._backend_arg
    if not isinstance(backend, str):
        return None

    def make(name: str) -> CodeMode:
        return CodeMode(
            list(cm.tools),
            backend=create_backend(backend, cm._backend_options),
            protocol=cm.protocol,
            timeout=cm.timeout,
            max_tool_calls=cm.max_tool_calls,
            max_output=cm.max_output,
            spare=False,  # a client's session starts its runtime when it first runs
        )

    return make
