"""Behaviour tests of the rules in real podman containers: the static helper builds, one
container per script, and waiting for a container's alert (naming what it did see when
the alert does not come). Used by tests/test_default_rules*.py."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest

from shared.natsserver import NatsServer, NatsServerConfig, free_port
from tests import containers
from tests.conftest import ROOT, is_root
from tests.pipeline import Pipeline, new_node

UNCONFINED = ["--security-opt", "seccomp=unconfined"]
NO_NET = ["--network", "none"]


@asynccontextmanager
async def alerting_pipeline(tmp_path_factory, podman_socket, probe_cfg=None, **alerter_kw) -> AsyncIterator[Pipeline]:
    """probe -> enricher (names from podman) -> alerter with the default rules, on a nats-server
    of its own; alerts are collected from the start (`p.alerter` is the alerter)."""
    from services.alerter.config import AlerterConfig
    from services.alerter.service import AlerterService
    from services.enricher.config import EnricherConfig
    if not is_root():
        pytest.fail("the probe needs root")
    tmp = tmp_path_factory.mktemp("rules-e2e")
    node = new_node()
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp / "js")) as srv:
        alerter = AlerterService(AlerterConfig(subject=f"eunomia.event.{node}.>",
                                               queue_group=f"q{uuid.uuid4().hex[:8]}", **alerter_kw),
                                 Pipeline.common_for(srv.url, node))
        async with Pipeline(srv.url, node, enricher_cfg=EnricherConfig(runtime_sockets=(podman_socket,)),
                            probe_cfg=probe_cfg, extra=[alerter]) as p:
            await p.collect("eunomia.alert.>", n=0)  # subscribe now, before anything happens
            p.alerter = alerter
            yield p


def build_static(tmp_path_factory, source: str, mount: str) -> list[str]:
    """tests/data/<source> built static as `actions`, in a folder; podman flags mounting it at `mount`."""
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the test helper: run `make bootstrap`")
    d = tmp_path_factory.mktemp(source.split(".")[0])
    d.chmod(0o755)  # non-root containers run it too
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "actions"), str(ROOT / "tests/data" / source)],
                   check=True, capture_output=True)
    return ["-v", f"{d}:{mount}:ro"]


async def in_container(script: str, flags: list[str] = (), check: bool = False, timeout: float = 60,
                       name: str | None = None) -> str:
    """Run `sh -c script` in a new busybox container; return its full id.

    The container lingers a second after the script: the enricher maps a
    cgroup to its container by looking the cgroup up, which fails once a
    very short-lived container is gone (its events then carry no container)."""
    name = name or f"eunomia-rules-{uuid.uuid4().hex[:10]}"
    cid_file = f"/tmp/{name}.cid"
    try:
        r = await asyncio.to_thread(containers.run, ["sh", "-c", f"{script}\nsleep 1"], name=name, check=False,
                                    flags=[*flags, "--cidfile", cid_file], timeout=timeout)
        if check and r.returncode:
            pytest.fail(f"container failed ({r.returncode}): {r.stderr}")
        with open(cid_file) as f:
            return f.read().strip()
    finally:
        await asyncio.to_thread(containers.remove, name)
        subprocess.run(["rm", "-f", cid_file])


def alerts_of(p, cid: str) -> list[dict]:
    return p._by_subject["eunomia.alert.>"].matching(lambda a: (a.get("container") or {}).get("id") == cid)


async def alert_for(p, rule: str, cid: str, timeout: float = 20.0) -> dict:
    """The first alert of `rule` for container `cid`; a failure lists its alerts, events and the probe's losses."""
    def match(a):
        return a.get("rule") == rule and (a.get("container") or {}).get("id") == cid
    try:
        return (await p.collect("eunomia.alert.>", match, n=1, timeout=timeout))[0]
    except (TimeoutError, asyncio.TimeoutError):
        evs = [(e["kind"], e.get("comm"), {k: e.get(k) for k in ("filename", "path", "flags", "mode", "ret", "syscall",
                                                             "target", "request", "cmd", "family") if k in e})
               for e in p.events.matching(lambda e: (e.get("container") or {}).get("id") == cid
                                          and not str(e.get("comm")).startswith(("runc", "exe", "conmon")))]
        if p.probe:  # the kernel's counts now, not as of the last counters interval
            p.probe.read_counters()
        lost = {k: p.probe.stats.total(k) for k in ("probe_lost_events_total", "bus_publish_failed_events_total",
                                                    "probe_filtered_events_total")} if p.probe else None
        dropped = {name: svc.stats.total("bus_slow_consumer_dropped_total")
                   for name, svc in (("enricher", getattr(p, "enricher", None)), ("alerter", getattr(p, "alerter", None)))
                   if svc is not None}
        pytest.fail(f"no {rule!r} alert for container {cid[:12]}; its alerts: "
                    f"{sorted({a.get('rule') for a in alerts_of(p, cid)})}; its events ({len(evs)}): {evs[-40:]}; "
                    f"probe losses: {lost}; slow-consumer drops: {dropped}")
