"""`python -m codemode_jupyter.testing.daytona_server`: serve until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import time

from codemode_jupyter.testing.daytona_server.sandbox import DEFAULT_API_KEY
from codemode_jupyter.testing.daytona_server.server import ADMIN, DaytonaLoopbackServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m codemode_jupyter.testing.daytona_server",
        description="Serve a Daytona-compatible API on 127.0.0.1, sandboxes in the local jail.",
    )
    parser.add_argument("--port", type=int, default=3986)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--root", help="directory for sandbox files (default: a temporary one)")
    parser.add_argument(
        "--network",
        action="store_true",
        help="let sandboxes use the host network (needed for preview links)",
    )
    parser.add_argument("--no-jail", action="store_true", help="run commands without bubblewrap")
    parser.add_argument(
        "--log-read-size",
        type=int,
        default=1024,
        help="bytes per log message, as the daemon reads them (0: one per chunk)",
    )
    args = parser.parse_args(argv)
    server = DaytonaLoopbackServer(
        api_key=args.api_key,
        port=args.port,
        root=args.root,
        network=args.network,
        isolate=False if args.no_jail else None,
        log_read_size=args.log_read_size or None,
    )

    # Ctrl-C and `kill` (SIGTERM) both stop it cleanly: sandbox processes killed, the
    # temporary root removed. SIGINT is set explicitly: a shell's `&` would leave it ignored.
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    print(f"Daytona loopback server on {server.base_url}", flush=True)
    print(f"  export DAYTONA_API_URL={server.api_url} DAYTONA_API_KEY={args.api_key}", flush=True)
    print(
        f"  export NO_PROXY=127.0.0.1,localhost  # admin: {server.base_url}{ADMIN}/counts",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
