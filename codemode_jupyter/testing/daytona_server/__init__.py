"""A Daytona-compatible loopback server, for tests and offline development.

It speaks the subset of the Daytona control-plane and toolbox API that the `daytona` SDK uses
for codemode-jupyter (see docs/daytona.md): sandboxes (create, get, list, start, stop, delete,
preview links), sessions and session commands with a streaming logs websocket, command input,
one-shot `execute` and `code-run`, bulk upload and the user's home directory. Each sandbox is a
host directory; commands run inside the local backend's bubblewrap jail when it is available
(home `/home/daytona`, as on Daytona), else as plain subprocesses with the directory as home.

As Daytona's daemon does, it sends a command's log (each chunk behind a 3-byte stream marker)
in 1,024-byte reads, so a message may end inside a marker or a UTF-8 character.

Faults can be injected (HTTP status, slow responses, requests that succeed but are answered
with an error, log websockets dropped at a chosen byte, a sandbox that is deleted, stopped or
broken behind the client's back, deleted sandboxes that linger as "destroying") and every
request is counted by route, through the Python API (`DaytonaLoopbackServer`) or the admin
endpoints under `/_admin`.

    python -m codemode_jupyter.testing.daytona_server --port 3986
    export DAYTONA_API_URL=http://127.0.0.1:3986/api DAYTONA_API_KEY=loopback
"""

from codemode_jupyter.testing.daytona_server.server import DaytonaLoopbackServer

__all__ = ["DaytonaLoopbackServer"]
