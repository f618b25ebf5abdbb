"""The filter plan end to end: real probe, enricher and alerter on a real
nats-server. The alerter's rules decide what the kernel emits; a user rule
added at run time on a path outside the default plan alerts after the
hot reload (nothing is lost to the filter)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from services.alerter.config import DEFAULT_RULES_DIR, AlerterConfig
from services.alerter.service import AlerterService
from shared import subjects
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from tests.cluster import until
from tests.pipeline import Pipeline, new_node

pytestmark = [pytest.mark.bpf, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]

USER_RULE = """
- rule: Read of srv secrets
  desc: a user rule on a path no default rule covers
  condition: evt.type = open and fd.name startswith "{d}/"
  output: secret read (file=%fd.name proc=%proc.name)
  priority: WARNING
"""


async def test_user_rule_outside_the_default_plan_alerts_after_reload(tmp_path: Path):
    d = Path(f"/srv/eunomia-secret-{uuid.uuid4().hex[:8]}")
    d.mkdir(parents=True)
    (d / "key").write_text("x")
    user = tmp_path / "user.yaml"
    user.write_text("[]\n")
    node = new_node()
    try:
        async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp_path / "js")) as srv:
            alerter = AlerterService(AlerterConfig(rules=(DEFAULT_RULES_DIR, user), reload_check_s=0,
                                                   subject=f"eunomia.event.{node}.>",
                                                   queue_group=f"q{uuid.uuid4().hex[:8]}"),
                                     Pipeline.common_for(srv.url, node))
            async with Pipeline(srv.url, node, extra=[alerter]) as p:
                await p.collect("eunomia.alert.>", n=0)
                ctl = subjects.ctl_probe(node)

                async def plan_has(pred) -> bool:
                    return pred((await p.bus.request_json(ctl, {"op": "status"}))["plan"])
                await until(lambda: plan_has(lambda pl: (pl["source"] or "").startswith("alerter")), 20,
                            "the alerter's plan in the probe")
                first = await asyncio.to_thread(subprocess.Popen, ["cat", str(d / "key")],
                                                stdout=subprocess.DEVNULL)
                await asyncio.to_thread(first.wait)
                await p.wait_for(lambda e: e["kind"] == "exit" and e["pid"] == first.pid, timeout=10)
                assert not p.events.matching(lambda e: e["kind"] == "open" and e["pid"] == first.pid
                                             and e.get("path") == str(d / "key"))

                before = (await p.bus.request_json(ctl, {"op": "status"}))["plan"]["prefix_entries"]
                user.write_text(USER_RULE.format(d=d))
                reply = await p.bus.request_json(subjects.CTL_ALERTER, {"op": "reload"})
                assert reply["ok"], reply
                await until(lambda: plan_has(lambda pl: pl["prefix_entries"] == before + 1), 10, "the reloaded plan")
                second = await asyncio.to_thread(subprocess.Popen, ["cat", str(d / "key")],
                                                 stdout=subprocess.DEVNULL)
                await asyncio.to_thread(second.wait)
                alerts = await p.collect("eunomia.alert.>", lambda a: a["rule"] == "Read of srv secrets"
                                         and a["pid"] == second.pid, timeout=15)
                assert alerts and alerts[0]["event"]["path"] == str(d / "key")
                assert alerts[0]["event"]["proc"]["name"] == "cat"
    finally:
        (d / "key").unlink()
        d.rmdir()
