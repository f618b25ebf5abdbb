"""`eunomia events` as a real subprocess against a real probe + enricher."""
import asyncio
import subprocess
import sys
import uuid

import orjson
import pytest

from services.enricher.format import line, matches_container
from tests import containers
from tests.conftest import ROOT
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.bpf, pytest.mark.podman]


async def test_events_follow_json_for_one_container(nats_server, bb_image, podman_socket):
    name = f"enr-cli-{uuid.uuid4().hex[:8]}"
    async with Pipeline(nats_server.url) as p:
        cli = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "--nats", nats_server.url, "events", "--follow", "--json",
             "--container", name, "--kind", "exec", "--count", "20"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            banner = await asyncio.wait_for(asyncio.to_thread(cli.stderr.readline), 30)
            assert b"listening on" in banner
            # noise from elsewhere must not show: a host process and another container
            await asyncio.to_thread(containers.run, ["cat", "/etc/passwd"], name=f"{name}-other")
            await asyncio.to_thread(containers.run, ["sh", "-c", "for i in $(seq 40); do cat /etc/hostname; done"],
                                    name=name)
            out, err = await asyncio.to_thread(cli.communicate, timeout=60)
        finally:
            if cli.returncode is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 0, err.decode()
        events = [orjson.loads(x) for x in out.splitlines()]
        # runc's set-up, the shell's exec, then 40 times: the shell forks, the child execs cat
        assert len(events) == 20 and {e["container"]["name"] for e in events} == {name}
        assert {e["kind"] for e in events} == {"exec"}
        cats = [e for e in events if e["argv"] == ["cat", "/etc/hostname"]]
        assert cats, [(e["kind"], e.get("argv"), e["proc"]["name"]) for e in events]
        assert all(e["proc"]["name"] == "cat" and e["proc"]["pname"] == "sh" for e in cats), \
            [(e["pid"], e["ppid"], e["proc"]) for e in cats]
        assert all(e["node"] == p.node and e["container"]["image"] == bb_image for e in events)


def test_readable_line():
    ev = {"ts": 1_700_000_000_123_456_789, "kind": "open", "pid": 42, "comm": "cat", "path": "/etc/shadow",
          "flags": 0, "mode": 0, "ret": -13, "proc": {"name": "cat"},
          "container": {"id": "ab" * 32, "name": "web", "image": "x"}}
    text = line(ev)
    assert " web " in text and " open " in text and "cat[42]" in text
    assert text.endswith("path=/etc/shadow flags=0 mode=0 ret=-13") and ".123456 " in text
    exec_line = line({**ev, "kind": "exec", "argv": ["ls", "-l"], "filename": "/bin/ls", "ret": 0,
                      "container": None})
    assert " host " in exec_line and exec_line.endswith("ls -l")
    assert matches_container(ev, "web") and matches_container(ev, "abab") and not matches_container(ev, "host")
    assert matches_container({"container": None}, "host")
    pod_ev = {**ev, "k8s": {"pod": "web-7d4b9c8f5d-x2x9q", "namespace": "shop"}}
    assert " shop/web-7d4b9c8f5d-x2x9q/web " in line(pod_ev)
    assert matches_container(pod_ev, "shop/web-7d4b9c8f5d-x2x9q/web") and matches_container(pod_ev, "web")
