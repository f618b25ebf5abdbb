"""`eunomia up` end to end: one command, the whole single-node stack, real
BPF, real containers; what a container does comes out as alerts and events
through the HTTP API and as metrics."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from shared.natsserver import free_port
from tests import containers

ROOT = Path(__file__).resolve().parent.parent
EUNOMIA = [sys.executable, "-m", "services.cli.main"]

pytestmark = [pytest.mark.bpf, pytest.mark.podman, pytest.mark.slow]


def _poll(fn, timeout=40.0, every=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    return last


@pytest.fixture
def stack(tmp_path, podman_socket):
    nats_port, api_port = free_port(), free_port()
    node = f"up{uuid.uuid4().hex[:6]}"
    log = open(tmp_path / "up.log", "w")
    proc = subprocess.Popen(
        [*EUNOMIA, "--data-dir", str(tmp_path / "data"), "--node", node, "up", "--nats-port", str(nats_port),
         "--api-port", str(api_port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"

    def healthy():
        try:
            return requests.get(f"{base}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    try:
        assert _poll(healthy, 30), f"api never healthy; log:\n{(tmp_path / 'up.log').read_text()[-3000:]}"
        token = (tmp_path / "data" / "api-token").read_text().strip()
        # the probe is the slowest to start (BPF compile): wait for its heartbeat
        assert _poll(lambda: 'eunomia_service_up{node="%s",service="probe"} 1' % node in
                     requests.get(f"{base}/metrics", timeout=2).text, 180), "probe never came up"
        yield {"base": base, "token": token, "proc": proc, "node": node, "log": tmp_path / "up.log"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_up_runs_the_whole_stack(stack, bb_image):
    base, hdr = stack["base"], {"Authorization": f"Bearer {stack['token']}"}
    name = f"up-{uuid.uuid4().hex[:8]}"
    r = containers.run(["sh", "-c", "cat /etc/shadow >/dev/null; echo hi > /tmp/x; sleep 1"], name=name)
    assert r.returncode == 0, r.stderr

    def alert_for_shadow():
        items = requests.get(f"{base}/api/v1/alerts", params={"container": name}, headers=hdr, timeout=5).json()
        return [a for a in items.get("items", []) if "shadow" in a.get("output", "")]

    alerts = _poll(alert_for_shadow, 40)
    assert alerts, f"no alert for /etc/shadow read; log tail:\n{stack['log'].read_text()[-3000:]}"
    assert alerts[0]["container"]["name"] == name

    def exec_events():
        items = requests.get(f"{base}/api/v1/events", params={"container": name, "kind": "exec"}, headers=hdr,
                             timeout=5).json()
        return items.get("items", [])

    execs = _poll(exec_events, 30)
    assert execs and all(e["container"]["name"] == name for e in execs)
    assert execs[0]["container"]["image"] == containers.IMAGE

    conts = requests.get(f"{base}/api/v1/containers", headers=hdr, timeout=5).json()["items"]
    assert any(c["name"] == name for c in conts)

    want = ("eunomia_probe_events_total", "eunomia_probe_lost_events_total", "eunomia_alerts_total",
            f'eunomia_container_events{{class="exec",container="{name}"')  # kernel per-cgroup counters
    metrics = _poll(lambda: (lambda m: m if all(w in m for w in want) else None)(
        requests.get(f"{base}/metrics", timeout=5).text), 30)  # heartbeats come every 2 s
    assert metrics, [w for w in want if w not in requests.get(f"{base}/metrics", timeout=5).text]

    # a clean stop on SIGTERM
    stack["proc"].send_signal(signal.SIGTERM)
    assert stack["proc"].wait(30) == 0
