"""How a session serves one run: the program's frames in, tool calls out, until it is done.

`Serving` is a part of `CodeMode` (engine/session.py), moved here whole: the loop that reads
the runtime's frames, starts and ends tool calls, resolves preview links, and halts or
finishes the run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from codemode_jupyter.backends import (
    BackendConfigError,
    BackendStatus,
)
from codemode_jupyter.engine import options
from codemode_jupyter.engine.calls import (
    CallOutcome,
    encode_result,
    finish_call,
    prepare_call,
    submit_async,
)
from codemode_jupyter.engine.connection import Inbox, RuntimeConnection
from codemode_jupyter.engine.run_state import Outcome, RunState
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.result import Preview, RunError, RunResult, ToolCall
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.tools.tool import ToolRegistry

_POLL = 0.25  # how often a waiting run looks up from its inbox for cancel and Ctrl-C
_GRACE = 0.5  # how long an interrupted program may take to stop before its runtime is killed


class Serving:
    """The serving loop of `CodeMode`: its methods use the session's backend and loops."""

    def _start_and_serve(
        self,
        run: RunState,
        code: str,
        registry: ToolRegistry,
        limits: tuple[float, int],
        status: BackendStatus,
        fresh: bool,
        inputs: dict[str, Any] | None = None,
    ) -> RunResult:
        timeout, max_calls = limits
        try:
            conn, started, lost = self._connection(fresh, timeout)
        except BackendConfigError:
            raise
        except Exception as exc:  # no runtime: this run fails, the next one tries again
            run.emit(ev.RunStarted(status.backend, status.isolation, True))
            late = time.perf_counter() - run.started >= timeout
            error = RunError(
                "Timeout" if late else "RuntimeUnavailable",
                f"the runtime could not be started: {exc}",
            )
            return self._finish(
                run, Outcome("timeout" if late else "crashed", error, state_lost=True), status
            )
        run.emit(ev.RunStarted(status.backend, status.isolation, started))
        if lost:
            run.state_lost = True
            run.output(
                2,
                f"[codemode] {lost} while idle; a fresh runtime took over and the "
                "earlier state was lost\n",
            )
        self._show_late_output(conn, run)
        run.connection = conn
        if run.cancel_requested:
            conn.post(Inbox.CANCEL, run)
        conn.sink = run
        conn.lead()
        try:
            if started or run.files:  # else nothing to send: no run files, the old work dir
                for data in run.rich.upload_frames(started, run.files):
                    conn.transport.write(data)
            conn.send_run(run.id, code, registry.specs(), run.rich.limits(), inputs)
            outcome = self._serve(conn, run, registry, run.started + timeout, max_calls)
        except KeyboardInterrupt:
            outcome = self._halt(conn, run, "interrupted", "the program was interrupted")
            self._finish(run, outcome, status)
            raise
        finally:
            conn.follow()
            conn.sink = None
            run.cancel_async_calls()
        return self._finish(run, outcome, status)

    @staticmethod
    def _show_late_output(conn: RuntimeConnection, run: RunState) -> None:
        """What threads of earlier runs wrote between runs: capped, and labelled as theirs."""
        for stream, text in conn.take_late_output():
            run.output(
                stream, "[codemode] written between runs by threads an earlier run left running:\n"
            )
            run.output(stream, text.text())
            if not text.text().endswith("\n"):
                run.output(stream, "\n")
            run.output(stream, "[codemode] end of the earlier runs' output\n")

    def _serve(
        self,
        conn: RuntimeConnection,
        run: RunState,
        registry: ToolRegistry,
        deadline: float,
        max_calls: int,
    ) -> Outcome:
        """Answer the runtime's frames until the program is done; return the outcome."""
        while True:
            remaining = deadline + run.paused - time.perf_counter()
            if remaining <= 0 and not run.pauses:
                return self._halt(
                    conn,
                    run,
                    "timeout",
                    f"the program ran past its {deadline - run.started:g} s timeout",
                )
            message = conn.next_message(max(min(remaining, _POLL), 0.01))
            if message is None:
                continue
            kind, frame = message
            if kind is Inbox.CALL:
                if len(run.calls) >= max_calls:
                    return self._halt(
                        conn, run, "limit", f"the program made more than {max_calls} tool calls"
                    )
                self._start_call(conn, run, registry, frame)
            elif kind is Inbox.CALL_DONE:
                if frame[0] is run:
                    self._end_call(conn, run, *frame[1:])
            elif kind is Inbox.PREVIEW:
                self._preview(conn, run, frame)
            elif kind is Inbox.PREVIEW_URL:
                if frame[0] is run:
                    self._preview_ready(run, *frame[1:])
            elif kind is Inbox.DONE and frame["id"] == run.id:
                self._await_previews(conn, run, deadline)
                return Outcome.from_done(frame)
            elif kind is Inbox.EOF:
                return self._crashed(conn)
            elif kind is Inbox.CANCEL and frame is run:
                return self._halt(conn, run, "interrupted", "the program was cancelled")

    def _start_call(
        self, conn: RuntimeConnection, run: RunState, registry: ToolRegistry, frame: dict
    ) -> None:
        if not run.in_flight:
            run.rounds += 1
        prepared = prepare_call(registry, frame, run.rounds)
        run.wire_ids[len(run.calls) + 1] = prepared.call.id
        prepared.call.id = len(run.calls) + 1  # ids count from 1 in each run: transcripts repeat
        run.calls.append(prepared.call)
        run.in_flight.add(prepared.call.id)
        if run.on_event is not None:
            run.emit(
                ev.ToolCallStarted(
                    prepared.call.id, prepared.call.name, prepared.call.args, prepared.call.round
                )
            )
        if prepared.error is not None or not prepared.tool.is_async:
            outcome = prepared.run_sync()
            if run.debugging:
                with run.paused_lock:
                    run.paused += outcome.duration
                run.debugging = False
            self._end_call(conn, run, prepared.call, outcome)
            return
        run.async_calls.append(
            submit_async(
                self._async,
                prepared,
                lambda outcome: conn.post(Inbox.CALL_DONE, (run, prepared.call, outcome)),
            )
        )

    def _end_call(
        self, conn: RuntimeConnection, run: RunState, call: ToolCall, outcome: CallOutcome
    ) -> None:
        finish_call(call, outcome)
        run.in_flight.discard(call.id)
        # Announced before the program gets the result, so listeners see the call end
        # before any output the program writes after it.
        if run.on_event is not None:
            run.emit(
                ev.ToolCallFinished(
                    call.id, call.name, call.round, call.result, call.error, call.duration
                )
            )
        data = encode_result(call, run.wire_ids.pop(call.id))
        if conn.transport.batch_results:  # one request per tool round: held until the last
            run.unsent.append(data)
            if run.in_flight:
                return
            data, run.unsent = b"".join(run.unsent), []
        conn.answer(data)

    def _preview(self, conn: RuntimeConnection, run: RunState, frame: dict) -> None:
        """Ask the backend for a port's link off this thread (a remote backend may be slow);
        the answer comes back through the inbox."""
        port = frame["port"]
        if port in run.preview_ports:
            return
        run.preview_ports.add(port)
        backend = self.backend

        def resolve() -> None:
            try:
                conn.post(Inbox.PREVIEW_URL, (run, port, backend.preview_url(port)))
            except Exception as exc:
                conn.post(Inbox.PREVIEW_URL, (run, port, f"(no link: {exc})"))

        threading.Thread(target=resolve, name="codemode-preview", daemon=True).start()

    @staticmethod
    def _preview_ready(run: RunState, port: int, url: str) -> None:
        preview = Preview(port, url)
        run.previews.append(preview)
        run.emit(ev.PreviewAnnounced(preview))

    def _await_previews(self, conn: RuntimeConnection, run: RunState, deadline: float) -> None:
        """A program that announced a preview and ended at once still gets its link."""
        while len(run.previews) < len(run.preview_ports):
            remaining = deadline + run.paused - time.perf_counter()
            message = conn.next_message(max(0.0, min(remaining, 5.0)))
            if message is None:
                return
            kind, frame = message
            if kind is Inbox.PREVIEW_URL and frame[0] is run:
                self._preview_ready(run, *frame[1:])

    def preview(self, port: int, on_event: ev.EventCallback | None = None) -> Preview:
        """A preview link for `port`, announced to the current run's listeners if any."""
        preview = Preview(port, self.backend.preview_url(options.port(port)))
        if on_event is not None:
            on_event(ev.PreviewAnnounced(preview))
        return preview

    def _crashed(self, conn: RuntimeConnection) -> Outcome:
        info = conn.fault or conn.transport.exit_info()
        self._drop_runtime()
        message = f"{info}; its state was lost, and the next run starts a fresh runtime"
        return Outcome("crashed", RunError("RuntimeCrashed", message), state_lost=True)

    def _halt(self, conn: RuntimeConnection, run: RunState, status: str, why: str) -> Outcome:
        """Interrupt the program; if it does not stop within _GRACE, replace the runtime."""
        kinds = {"timeout": "Timeout", "interrupted": "Interrupted", "limit": "ToolCallLimit"}
        run.cancel_async_calls()
        conn.send({"t": P.INTERRUPT, "id": run.id})
        deadline = time.perf_counter() + _GRACE
        while True:
            try:
                message = conn.next_message(max(0.0, deadline - time.perf_counter()))
            except KeyboardInterrupt:
                break
            if message is None:
                break
            kind, frame = message
            if kind is Inbox.DONE and frame["id"] == run.id:
                trace = (frame.get("error") or {}).get("traceback", "")
                return Outcome(status, RunError(kinds[status], why, trace))
            if kind is Inbox.EOF:
                break
            if kind is Inbox.CALL:  # a stopping program gets no more tool results
                conn.transport.write(
                    P.encode(
                        {
                            "t": P.RESULT,
                            "id": frame["id"],
                            "ok": False,
                            "error": {"type": "RuntimeError", "message": "the run was stopped"},
                        }
                    )
                )
        self._drop_runtime()
        return Outcome(
            status,
            RunError(
                kinds[status],
                f"{why}; it did not stop, so its runtime was replaced and its state was lost",
            ),
            state_lost=True,
        )

    def _finish(self, run: RunState, outcome: Outcome, status: BackendStatus) -> RunResult:
        """The run's result, recorded (listeners of RunFinished find it in last_result)."""
        result = run.result(outcome, status)
        self.last_result = result
        self.history.append(result)
        run.emit(ev.RunFinished(result))
        return result
