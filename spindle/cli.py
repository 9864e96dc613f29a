"""``spindle serve``: start the server with the embedded defaults."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from spindle.api.context import KeyRing
from spindle.settings import load_settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spindle", description="A self-hosted Assistants API server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the HTTP server")
    serve_cmd.add_argument("--host", default=None, help="address to bind (default 127.0.0.1 or SPINDLE_HOST)")
    serve_cmd.add_argument("--port", type=int, default=None, help="port (default 8000 or SPINDLE_PORT)")
    serve_cmd.add_argument("--data-dir", type=Path, default=None, help="data directory (default ./spindle-data)")
    serve_cmd.add_argument("--workers", type=int, default=1,
                           help="server processes sharing the port on this host (needs PostgreSQL); default 1")
    serve_cmd.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by --workers
    migrate_cmd = sub.add_parser("migrate", help="copy the metadata (and file bytes) to other backends, then verify")
    migrate_cmd.add_argument("--from", dest="source", default="",
                             help="database URL to copy from (default: the embedded SQLite of --data-dir)")
    migrate_cmd.add_argument("--to", dest="target", required=True, help="database URL to copy to, e.g. postgresql://...")
    migrate_cmd.add_argument("--blobs-from", default=None,
                             help="file bytes to copy from: '' = the data dir (default), or s3://bucket/prefix")
    migrate_cmd.add_argument("--blobs-to", default=None, help="file bytes to copy to, e.g. s3://bucket/prefix")
    migrate_cmd.add_argument("--data-dir", type=Path, default=None, help="data directory (default ./spindle-data)")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return _migrate(args)

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir}.items()
                 if v is not None}
    settings = load_settings(**overrides)
    server = settings.server
    logging.basicConfig(level=server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = KeyRing(server.api_keys)
    if keys.local_mode and not _is_loopback(server.host):
        print(f"Refusing to listen on {server.host} without API keys: set SPINDLE_API_KEYS "
              "(comma-separated key or key:project) or bind to 127.0.0.1.", file=sys.stderr)
        return 2

    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        from spindle import workers

        refusal = workers.needs_shared_store(server.database_url)
        if refusal:
            print(refusal, file=sys.stderr)
            return 2
        passed = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
        print(f"Spindle: {args.workers} workers on http://{server.host}:{server.port}", flush=True)
        return workers.supervise(server.host, server.port, args.workers, passed)

    from spindle.api.connections import serve
    from spindle.app import create_app
    from spindle.llm.client import build_model

    model = build_model(server.llm_base_url, server.llm_api_key, server.llm_model_map, server.llm_timeout_s,
                        server.llm_azure_api_version)
    url = f"http://{server.host}:{server.port}"
    print(f"Spindle listening on {url}", flush=True)
    print(f"  data dir : {server.data_dir.resolve()}")
    from spindle.store.factory import describe

    print(f"  metadata : {describe(server.database_url)}")
    print(f"  files    : {describe(server.blob_url, 'data dir')}")
    print(f"  model    : {model.describe()}")
    if keys.local_mode:
        print("  keys     : local mode - no SPINDLE_API_KEYS set, any key is accepted, loopback only")
    else:
        print(f"  keys     : {len(keys.keys)} key(s), projects: {', '.join(sorted(set(keys.keys.values())))}")
    print(f'  OpenAI   : OpenAI(base_url="{url}/v1", api_key="<key>")')
    print(f'  Azure    : AzureOpenAI(azure_endpoint="{url}", api_key="<key>", api_version="2024-05-01-preview")',
          flush=True)
    serve(create_app(settings), server, fd=args.worker_fd)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from spindle.store.migrate import migrate

    data_dir = args.data_dir or load_settings().server.data_dir
    blobs_from = args.blobs_from if args.blobs_from is not None else ("" if args.blobs_to else None)
    lines: list[str] = []
    try:
        report = asyncio.run(migrate(data_dir, args.source, args.target, blobs_from, args.blobs_to, lines))
    except Exception as exc:  # refused (a non-empty target) or unreachable: say it plainly
        print("\n".join(lines), file=sys.stderr)
        print(f"migrate failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
