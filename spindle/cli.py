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
    args = parser.parse_args(argv)

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

    from spindle.api.connections import serve
    from spindle.app import create_app
    from spindle.llm.client import build_model

    model = build_model(server.llm_base_url, server.llm_api_key, server.llm_model_map, server.llm_timeout_s,
                        server.llm_azure_api_version)
    url = f"http://{server.host}:{server.port}"
    print(f"Spindle listening on {url}", flush=True)
    print(f"  data dir : {server.data_dir.resolve()}")
    print(f"  model    : {model.describe()}")
    if keys.local_mode:
        print("  keys     : local mode - no SPINDLE_API_KEYS set, any key is accepted, loopback only")
    else:
        print(f"  keys     : {len(keys.keys)} key(s), projects: {', '.join(sorted(set(keys.keys.values())))}")
    print(f'  OpenAI   : OpenAI(base_url="{url}/v1", api_key="<key>")')
    print(f'  Azure    : AzureOpenAI(azure_endpoint="{url}", api_key="<key>", api_version="2024-05-01-preview")',
          flush=True)
    serve(create_app(settings), server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
