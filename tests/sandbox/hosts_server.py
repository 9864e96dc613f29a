"""A sandbox server process for ``test_hosts``: a real provider and session manager built from
the ``SPINDLE_SANDBOX_*`` environment, driven over stdin/stdout with one JSON line each way.

Input lines: ``[key, code]``; output lines: what the call returned and where its session lives
on the host (uid, session directory, cgroup or pid files), so the test can compare servers.
"""

from __future__ import annotations

import asyncio
import json
import sys

from spindle.sandbox import SandboxSettings, SessionManager, build_provider
from spindle.sandbox.local import BubblewrapProvider


async def main() -> None:
    settings = SandboxSettings(pool_size=0, max_sessions=4, preload="", memory_mb=512, disk_mb=48)
    manager = SessionManager(build_provider(settings), settings)
    await manager.start()
    await manager.ready()
    provider = manager.provider
    assert isinstance(provider, BubblewrapProvider)
    print(json.dumps({"instance": provider.instance, "line": provider.limits_line}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        key, code = json.loads(line)
        async with manager.lease(key) as lease:
            result = await lease.execute(code, timeout=60)
        ts = manager.thread_session(key)
        assert ts is not None
        session = ts.session
        print(
            json.dumps(
                {
                    "status": result.status,
                    "out": "".join(getattr(o, "text", "") for o in result.outputs),
                    "uid": session.uid,  # type: ignore[attr-defined]
                    "root": str(session.root),  # type: ignore[attr-defined]
                    "limits": session.cgroup.join_files,  # type: ignore[attr-defined]
                    "pids": session.cgroup.pids(),  # type: ignore[attr-defined]
                }
            ),
            flush=True,
        )
    await manager.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
