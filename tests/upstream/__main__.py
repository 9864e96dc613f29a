"""``python -m tests.upstream --port P``: run the scripted upstream model in the foreground."""

from __future__ import annotations

import argparse

from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    parser.add_argument(
        "--api-key", default=None, help="require this key on chat requests (default: accept any)"
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="pause between streamed chunks for unscripted replies (default 0: instant)",
    )
    args = parser.parse_args(argv)
    serve(args.host, args.port, api_key=args.api_key, delay_ms=args.delay_ms)


if __name__ == "__main__":
    main()
