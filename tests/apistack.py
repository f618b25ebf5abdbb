"""Support for the API, metrics and dashboard tests.

`ApiStack` runs a real nats-server (JetStream), a real StoreService (SQLite in
a tmp dir) and the ApiService on their own event loop in a thread, so tests
(async aiohttp clients, or blocking selenium) talk to it like real clients.
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson

from services.api.config import ApiConfig
from services.api.service import ApiService
from services.store.config import StoreConfig
from services.store.service import StoreService
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from shared.schema import new_event_id
from tests.events import enriched_event, proc_view

NODE = "apinode"


class ApiStack:
    def __init__(self, tmp: Path, api_cfg: ApiConfig | None = None) -> None:
        self.tmp = tmp
        self.api_cfg = api_cfg or ApiConfig(port=0)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.api: ApiService | None = None
        self.store: StoreService | None = None
        self.nats_url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="api-stack", daemon=True)

    # ---- lifecycle ----
    def __enter__(self) -> "ApiStack":
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("API stack did not start in 60 s")
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._thread.is_alive():  # say where it hangs
            import sys
            import traceback
            traceback.print_stack(sys._current_frames()[self._thread.ident], file=sys.stderr)
            for t in asyncio.all_tasks(self.loop):
                t.print_stack(limit=4, file=sys.stderr)
            raise TimeoutError("API stack did not stop in 30 s")

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to __enter__
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        port = free_port()
        async with NatsServer(NatsServerConfig(port=port, store_dir=self.tmp / "js")) as srv:
            self.nats_url = srv.url
            common = CommonConfig(nats_url=srv.url, node=NODE, data_dir=self.tmp / "data", stats_interval=0.5)
            async with StoreService(StoreConfig(fetch_timeout_s=0.1, lag_interval_s=0.5), common) as store, \
                    ApiService(self.api_cfg, common) as api:
                self.store, self.api = store, api
                tasks = [asyncio.create_task(store.run(self._stop)), asyncio.create_task(api.run(self._stop))]
                self._ready.set()
                await asyncio.gather(*tasks)

    # ---- helpers for tests (any thread) ----
    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def token(self) -> str:
        return self.api.token

    def publish(self, subject: str, items: list[dict]) -> None:
        async def pub():
            await self.api.bus.publish_batch(subject, items)
            await self.api.bus.nc.flush()
        self.call(pub())

    def publish_raw(self, subject: str, data: bytes) -> None:
        async def pub():
            await self.api.bus.publish(subject, data)
            await self.api.bus.nc.flush()
        self.call(pub())

    def wait_stored(self, n_events: int, n_alerts: int = 0, timeout: float = 30) -> dict:
        """Wait until the store reports at least these row counts (polling; not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.call(self.api.store.stats())
            if st.get("events", 0) >= n_events and st.get("alerts", 0) >= n_alerts:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"store has {st.get('events')} events, {st.get('alerts')} alerts; "
                                   f"wanted {n_events}, {n_alerts}")
            time.sleep(0.1)


# ---- realistic enriched events (shapes from shared/schema.py) ----

def event(kind: str, ctr: dict | None, pid: int, ts: int, *, comm: str = "sh", ppid: int = 1,
          cgroup_id: int = 4242, proc: dict | None = None, **fields) -> dict:
    return enriched_event(kind, ctr=ctr, node=NODE, pid=pid, ts=ts, comm=comm, ppid=ppid, cgroup_id=cgroup_id,
                          proc=proc or proc_view(f"/bin/{comm}", [comm], ppid=ppid, pexe="/usr/bin/conmon"),
                          **fields)


def scenario(ctr: dict, t0: int, cgroup_id: int, pid: int = 100) -> list[dict]:
    """A container starts sh (`pid`), which forks and execs wget (pid+1) and cat (pid+2);
    wget connects out to 10.1.2.3:443; cat opens 20 files."""
    ev = []
    ev.append(event("exec", ctr, pid, t0, comm="sh", ppid=1, cgroup_id=cgroup_id, filename="/bin/sh",
                    argv=["sh", "-c", "wget; cat"], ret=0,
                    proc={"exe": "/bin/sh", "args": ["sh", "-c", "wget; cat"], "cmdline": "sh -c wget; cat",
                          "name": "sh", "cwd": "/", "ppid": 1, "pname": "conmon", "pexe": "", "pcmdline": "",
                          "ancestors": []}))
    for i, (child, prog) in enumerate(((pid + 1, "wget"), (pid + 2, "cat"))):
        ev.append(event("fork", ctr, pid, t0 + 10 + i, comm="sh", cgroup_id=cgroup_id, child_pid=child))
        ev.append(event("exec", ctr, child, t0 + 20 + i, comm=prog, ppid=pid, cgroup_id=cgroup_id,
                        filename=f"/bin/{prog}", argv=[prog, "x"], ret=0,
                        proc={"exe": f"/bin/{prog}", "args": [prog, "x"], "cmdline": f"{prog} x", "name": prog,
                              "cwd": "/", "ppid": pid, "pname": "sh", "pexe": "/bin/sh", "pcmdline": "sh",
                              "ancestors": [{"pid": pid, "comm": "sh", "exe": "/bin/sh", "args": ["sh"]}]}))
    ev.append(event("connect", ctr, pid + 1, t0 + 30, comm="wget", ppid=pid, cgroup_id=cgroup_id, family=2,
                    daddr="10.1.2.3", dport=443, saddr="10.88.0.5", sport=40000, proto="tcp", ret=0))
    for j in range(20):
        ev.append(event("open", ctr, pid + 2, t0 + 40 + j, comm="cat", ppid=pid, cgroup_id=cgroup_id,
                        path=f"/etc/file{j:02d}", flags=0, mode=0, ret=3))
    return ev


def alert(ctr: dict | None, ts: int, rule: str = "Terminal shell in container", priority: str = "WARNING",
          output: str = "shell spawned") -> dict:
    ev = event("exec", ctr, 100, ts, comm="sh", filename="/bin/sh", argv=["sh"], ret=0)
    return {"id": new_event_id(NODE), "ts": ts, "node": NODE, "kind": "alert", "pid": 100, "rule": rule,
            "priority": priority, "output": output, "tags": ["container", "shell"], "event": ev,
            "container": ctr, "k8s": None}


def stats_snapshot(service: str, counters: dict, gauges: dict | None = None, pid: int = 4321) -> bytes:
    def dump(t):
        return {n: [[dict(lbl), v] for lbl, v in rows] for n, rows in t.items()}
    return orjson.dumps({"service": service, "node": NODE, "pid": pid, "ts": time.time_ns(),
                         "counters": dump(counters), "gauges": dump(gauges or {})})
