"""A ring buffer too small for a storm: every event is delivered or counted
as lost, never dropped silently (real BPF, real nats-server)."""
from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest

from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared import bus as busmod
from shared import subjects
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from shared.stats import Stats

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]

STORM = 20_000


async def test_overflow_is_counted_not_silent(tmp_path):
    node = f"lost{uuid.uuid4().hex[:6]}"
    target = tmp_path / "f"
    target.write_text("x")
    got = 0
    pid = -1

    async def handler(subject, events):
        nonlocal got
        got += sum(1 for e in events if e["pid"] == pid and e.get("path") == str(target))

    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=None)) as srv:
        common = CommonConfig(nats_url=srv.url, node=node, data_dir=tmp_path, stats_interval=0.5)
        # 32 KiB: ~90 events; no dedup, so every open is its own event
        cfg = ProbeConfig(kinds=("open",), ringbuf_pages=8, counters_interval=0.5, dedup_window_ms=0)
        async with busmod.connect(srv.url, Stats("test")) as bus:
            await bus.subscribe_batches(subjects.raw(node), handler)
            await bus.nc.flush()
            async with ProbeService(cfg, common) as svc:
                stop = asyncio.Event()
                task = asyncio.create_task(svc.run(stop))
                child = await asyncio.create_subprocess_exec(
                    sys.executable, "-c",
                    f"import os\nfor _ in range({STORM}): os.close(os.open({str(target)!r}, os.O_RDONLY))")
                pid = child.pid
                assert await child.wait() == 0
                seen = -1
                while seen != got:  # until delivery settles
                    seen = got
                    await asyncio.sleep(0.5)
                stop.set()
                await task
    lost = svc.stats.total("probe_lost_events_total") + svc.stats.total("probe_queue_dropped_events_total")
    assert svc.stats.get("probe_lost_events_total") > 0, "a 32 KiB ring cannot hold this storm"
    assert got > 0
    assert got + lost >= STORM, f"{STORM - got - lost} events vanished without being counted"
