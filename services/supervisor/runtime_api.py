"""The container runtime's Engine API for the enricher, on a single node.

Docker serves its API itself; podman only when `podman system service`
runs. If podman is installed and no runtime socket answers, `eunomia up`
starts that service for the enricher (container names, images, labels) and
stops it on exit.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from services.enricher.config import DEFAULT_SOCKETS
from shared import log

_log = log.get("supervisor.runtime-api")
PODMAN_SOCKET = DEFAULT_SOCKETS[0]


async def answers(sock: str, timeout: float = 2.0) -> bool:
    """Whether an Engine API answers GET /_ping on unix socket `sock`."""
    if not Path(sock).exists():
        return False
    try:
        r, w = await asyncio.wait_for(asyncio.open_unix_connection(sock), timeout)
        w.write(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        await w.drain()
        data = await asyncio.wait_for(r.read(4096), timeout)
        w.close()
        return b"OK" in data
    except (OSError, asyncio.TimeoutError):
        return False


class PodmanApi:
    """Async context manager: a `podman system service` we started, or nothing."""

    def __init__(self, sock: str = PODMAN_SOCKET, runtime: str = "runc",
                 known: tuple[str, ...] = DEFAULT_SOCKETS) -> None:
        self.sock, self.runtime, self.known = sock, runtime, known
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def __aenter__(self) -> "PodmanApi":
        podman = shutil.which("podman")
        if not podman or any([await answers(s) for s in self.known]):
            return self
        Path(self.sock).parent.mkdir(parents=True, exist_ok=True)
        Path(self.sock).unlink(missing_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            podman, "--runtime", self.runtime, "system", "service", "--time=0", f"unix://{self.sock}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if await answers(self.sock):
                _log.info("started podman system service (pid %d) on %s", self.proc.pid, self.sock)
                return self
            await asyncio.sleep(0.1)
        _log.warning("podman system service did not answer on %s: containers will be named by id only",
                     self.sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
