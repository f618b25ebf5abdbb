"""A real nats-server cluster on loopback for fault tests.

`async with NatsCluster(tmp_path) as c:` starts `size` nats-server processes
with JetStream, --cluster and --routes to each other (and the partition
mapping every Eunomia server carries); `c.url` lists every client URL so a
client fails over; `kill(i)` SIGKILLs one node, `restart(i)` brings it back
with its JetStream store.

`ServiceProcess` runs one Eunomia service as its own process, to SIGKILL.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import orjson

from shared.natsserver import NatsServer, NatsServerConfig, free_port


class NatsCluster:
    def __init__(self, base: Path, size: int = 3, name: str = "eunomia-test") -> None:
        self.base = Path(base)
        ports = [(free_port(), free_port()) for _ in range(size)]
        routes = [f"nats://127.0.0.1:{cp}" for _, cp in ports]
        self.servers = [
            NatsServer(NatsServerConfig(
                port=p, store_dir=self.base / f"n{i}", name=f"n{i}", cluster_port=cp, cluster_name=name,
                routes=[r for j, r in enumerate(routes) if j != i]))
            for i, (p, cp) in enumerate(ports)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    async def start(self) -> None:
        await asyncio.gather(*(s.start() for s in self.servers))
        await self.wait_jetstream()

    async def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Wait until the JetStream meta group has a leader (streams can be created)."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=1)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception as e:  # no meta leader yet
                last = e
                await asyncio.sleep(0.25)
        raise TimeoutError(f"JetStream cluster not ready: {last}")

    async def kill(self, i: int) -> None:
        """SIGKILL node i (no clean shutdown)."""
        await self.servers[i].stop(kill=True)

    async def restart(self, i: int) -> None:
        await self.servers[i].start()

    async def stop(self) -> None:
        await asyncio.gather(*(s.__aexit__(None, None, None) for s in self.servers), return_exceptions=True)

    async def __aenter__(self) -> "NatsCluster":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---------------------------------------------------------------- services as processes

_RUN_SERVICE = """
import json, sys
from shared.config import CommonConfig
from shared.service import run_main
from services.supervisor.registry import SPECS
name, common, overrides = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
run_main(lambda: SPECS[name].build(CommonConfig(**common), **overrides))
"""


class ServiceProcess:
    """One Eunomia service in its own process, built exactly as `eunomia up` builds it
    (services/supervisor/registry.py), so a test can SIGKILL it and start it again."""

    def __init__(self, name: str, nats_url: str, node: str, data_dir: Path, *, cli: list[str] | None = None,
                 env: dict[str, str] | None = None, **overrides) -> None:
        self.name, self.node = name, node
        self.common = {"nats_url": nats_url, "node": node, "data_dir": str(data_dir), "stats_interval": 0.3}
        self.overrides = overrides
        self.cli, self.env = cli, env or {}
        self.proc: subprocess.Popen | None = None
        self.log = Path(data_dir) / f"{name}-{node}.log"

    def argv(self) -> list[str]:
        if self.cli is not None:  # the real `eunomia` command line, as deploy/ runs it
            return [sys.executable, "-m", "services.cli.main", "--nats", self.common["nats_url"],
                    "--node", self.node, "--data-dir", self.common["data_dir"], self.name, *self.cli]
        return [sys.executable, "-c", _RUN_SERVICE, self.name, json.dumps(self.common), json.dumps(self.overrides)]

    def start(self) -> None:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root), "EUNOMIA_LOG": "INFO", **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv(), cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no goodbye on the bus."""
        if self.alive():
            self.proc.kill()
        if self.proc:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def wait_heartbeat(nc, svc: ServiceProcess, timeout: float = 30.0) -> dict:
    """The first stats heartbeat of this very process (matched by pid): it is up and subscribed."""
    from shared import subjects

    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def cb(msg) -> None:
        snap = orjson.loads(msg.data)
        if snap.get("pid") == svc.pid and not got.done():
            got.set_result(snap)

    sub = await nc.subscribe(subjects.stats(svc.name, svc.node), cb=cb)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not got.done() and svc.alive() and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait([got], timeout=0.1)
        if not got.done():
            raise asyncio.TimeoutError
        return got.result()
    except asyncio.TimeoutError:
        raise AssertionError(f"{svc.name} (pid {svc.pid}) sent no heartbeat; alive={svc.alive()}; "
                             f"output:\n{svc.output()[-3000:]}") from None
    finally:
        await sub.unsubscribe()


async def until(cond, timeout: float, what: str, every: float = 0.05) -> None:
    """Poll `cond` (a function returning a value or an awaitable) until truthy;
    AssertionError naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = cond()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)
