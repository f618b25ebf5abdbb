"""`eunomia alerts` and `eunomia rules check` as real subprocesses against a real nats-server."""
import asyncio
import re
import sys

import orjson

from shared import bus as busmod
from shared import subjects
from shared.schema import new_event_id
from shared.stats import Stats
from shared.streams import ensure_streams
from tests.conftest import ROOT


def alert(i, priority="WARNING"):
    return {"id": new_event_id("n1"), "ts": 1_700_000_000_000_000_000, "node": "n1", "kind": "alert", "pid": 1,
            "rule": f"Rule {i}", "priority": priority, "output": f"out {i}", "tags": [], "event": {},
            "container": {"id": "ab" * 32, "name": "web"}, "k8s": None}


async def cli(url, *args, timeout=30):
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli.main", "--nats", url, *args,
                                             cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    return p.returncode, out.decode(), err.decode()


async def test_recent_alerts_need_the_stream_then_come_from_it(nats_server):
    rc, out, err = await cli(nats_server.url, "alerts")
    assert rc == 1 and "no ALERTS stream" in err and "--follow" in err
    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await ensure_streams(bus.js)
        await bus.publish_batch(subjects.alert("warning"), [alert(1), alert(2)])
        await bus.publish_batch(subjects.alert("critical"), [alert(3, "CRITICAL")])
        await bus.nc.flush()
        await asyncio.sleep(0.2)
    rc, out, err = await cli(nats_server.url, "alerts", "--last", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and "[Rule 2] web: out 2" in lines[0] and "CRITICAL" in lines[1]
    rc, out, _ = await cli(nats_server.url, "alerts", "--json", "--priority", "critical")
    assert rc == 0 and [orjson.loads(x)["rule"] for x in out.splitlines()] == ["Rule 3"]


async def test_follow_prints_live_alerts_as_json(nats_server):
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli.main", "--nats", nats_server.url,
                                             "alerts", "--follow", "--json", "--priority", "ERROR", cwd=ROOT,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await asyncio.wait_for(p.stderr.readline(), 30)  # "following alerts ..." once subscribed
        async with busmod.connect(nats_server.url, Stats("t")) as bus:
            await bus.publish(subjects.alert("error"), b"{broken")
            await bus.publish_batch(subjects.alert("notice"), [alert(1, "NOTICE")])
            await bus.publish_batch(subjects.alert("error"), [alert(2, "ERROR")])
            line = await asyncio.wait_for(p.stdout.readline(), 30)
        got = orjson.loads(line)
        assert got["rule"] == "Rule 2" and got["priority"] == "ERROR"
    finally:
        p.terminate()
        await p.wait()


async def test_rules_check_accepts_the_shipped_ruleset():
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli.main", "rules", "check",
                                             str(ROOT / "services/alerter/rules"), cwd=ROOT,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    assert p.returncode == 0, out + err
    m = re.search(rb"(\d+) rules \((\d+) enabled\)", out)
    assert m and int(m[1]) >= 100 and int(m[2]) >= 100, out  # the base rules plus the tactic files 40-* ... 90-*


async def test_standalone_alerter_prints_alerts_on_stdout_and_stops_on_sigterm(nats_server, tmp_path):
    from tests.test_alerter_service import exec_ev

    out_file = tmp_path / "alerts.jsonl"
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "--nats", nats_server.url, "--node", "cli1", "alerter",
        "--stdout", "--file", str(out_file), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        async with busmod.connect(nats_server.url, Stats("t")) as bus:
            ev = exec_ev("apk", ("add", "x"))
            line = b""
            for _ in range(100):  # until the service has subscribed
                await bus.publish_batch(subjects.event("n1", "exec"), [ev])
                try:
                    line = await asyncio.wait_for(p.stdout.readline(), 0.3)
                    break
                except asyncio.TimeoutError:
                    continue
        got = orjson.loads(line)
        assert got["rule"] == "Package management process in container" and got["event"]["id"] == ev["id"]
    finally:
        p.terminate()
        rc = await asyncio.wait_for(p.wait(), 30)
    assert rc == 0
    assert ev["id"] in out_file.read_text()
