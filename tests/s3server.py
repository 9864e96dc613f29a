"""A throwaway S3-protocol server for the tests: moto's standalone ``moto_server`` (PyPI
``moto[server]``), on a free loopback port, in memory. The S3 blob store talks to it over
HTTP like to any S3-compatible endpoint; nothing is mocked inside the process under test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class S3Unavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client (boto3, a Spindle server) needs to reach it."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, python: str | None = None) -> S3Server:
        """``python``: the interpreter whose venv has moto (default: this one)."""
        exe = Path(python or sys.executable).with_name("moto_server")
        command = [str(exe)] if exe.exists() else [shutil.which("moto_server") or "moto_server"]
        try:
            self.proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise S3Unavailable("moto_server is not installed (pip install 'moto[server]')") from exc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.endpoint, timeout=1)
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise S3Unavailable(f"moto_server exited with {self.proc.returncode}") from None
                time.sleep(0.1)
        raise S3Unavailable("moto_server did not answer within 30 s")

    def create_bucket(self, name: str) -> None:
        # Plain HTTP (moto does not check signatures): usable from the SDK-only e2e venvs too.
        response = httpx.put(f"{self.endpoint}/{name}", timeout=30)
        response.raise_for_status()

    def apply_env(self) -> None:
        os.environ.update(self.env())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
