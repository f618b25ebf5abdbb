"""`eunomia up` lifecycle, as a process: stops within 10 s of SIGTERM/SIGINT every time (also
right after a burst of load), its nats-server dies with it and is restarted when it dies,
and /healthz says when the bus is gone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from services.probe.exclusion import children_of
from shared.natsserver import find_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
EUNOMIA = [sys.executable, "-m", "services.cli.main"]
STOP_S = 10.0
CYCLES = int(os.environ.get("EUNOMIA_UP_CYCLES", "12"))  # each ~40 s on this machine under test load
LOAD = ("import os, subprocess\n"
        "for i in range(300_000):\n"
        "    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
        "for i in range(200):\n"
        "    subprocess.run(['/bin/true'])\n")

pytestmark = [pytest.mark.slow]


def until_sync(cond, timeout: float, every: float = 0.25) -> bool:
    """Poll `cond` until truthy (True) or `timeout` s pass (False); no timing is asserted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


def start_up(tmp_path: Path, *args: str, node: str | None = None, log_name: str = "up.log"):
    nats_port, api_port = free_port(), free_port()
    log = open(tmp_path / log_name, "w")
    proc = subprocess.Popen([*EUNOMIA, "--data-dir", str(tmp_path / "data"), "--node", node or f"lc{uuid.uuid4().hex[:6]}",
                             "up", "--nats-port", str(nats_port), "--api-port", str(api_port), "--no-podman-api",
                             *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, f"http://127.0.0.1:{api_port}", nats_port


def metrics_say(base: str, text: str) -> bool:
    try:
        return text in requests.get(f"{base}/metrics", timeout=2).text
    except requests.RequestException:
        return False


def health(base: str) -> int | None:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code
    except requests.RequestException:
        return None


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9, time.monotonic() - t0
    return rc, time.monotonic() - t0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.bpf
@pytest.mark.longest  # 12 cycles of 35-50 s: scheduled first (tests/conftest.py)
@pytest.mark.timeout(1800)
def test_up_stops_within_10s_after_load_every_time(tmp_path):
    took = []
    for i in range(CYCLES):
        proc, base, _ = start_up(tmp_path, "--capture", "all", log_name=f"up{i}.log")
        try:
            assert until_sync(lambda base=base: metrics_say(base, 'service="probe"} 1'), 180), \
                (tmp_path / f"up{i}.log").read_text()[-3000:]
            subprocess.run([sys.executable, "-c", LOAD], check=True, timeout=300)
            rc, secs = stop(proc, signal.SIGINT if i % 2 else signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = (tmp_path / f"up{i}.log").read_text()
        took.append(secs)
        assert secs <= STOP_S, f"cycle {i}: stop took {secs:.1f} s; log tail:\n{log[-3000:]}"
        assert rc == 0, f"cycle {i}: exit status {rc}; log tail:\n{log[-3000:]}"
    print(f"stop times over {CYCLES} cycles: max {max(took):.1f} s, mean {sum(took) / len(took):.1f} s")


def test_nats_server_dies_with_up_and_is_restarted_when_it_dies(tmp_path):
    proc, base, nats_port = start_up(tmp_path, "--only", "api", "store")
    try:
        assert until_sync(lambda: health(base) == 200, 60), (tmp_path / "up.log").read_text()[-3000:]
        nats_pid = next(p for p in children_of(proc.pid) if "nats-server" in Path(f"/proc/{p}/cmdline").read_text())
        os.kill(nats_pid, signal.SIGKILL)
        assert until_sync(lambda: any("nats-server" in Path(f"/proc/{p}/cmdline").read_text()
                                      for p in children_of(proc.pid) if p != nats_pid), 60), "not restarted"
        assert until_sync(lambda: metrics_say(base, "eunomia_nats_server_restarts_total") or health(base) == 200, 60)
        new_pid = next(p for p in children_of(proc.pid) if "nats-server" in Path(f"/proc/{p}/cmdline").read_text())
        assert until_sync(lambda: health(base) == 200, 60), "the API did not reconnect to the restarted bus"
        # the supervisor killed outright: its nats-server goes with it (PR_SET_PDEATHSIG)
        proc.kill()
        proc.wait()
        assert until_sync(lambda: not alive(new_pid), 20), "nats-server outlived its supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_healthz_reports_an_unhealthy_bus(tmp_path):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"

    def nats_up() -> subprocess.Popen:
        p = subprocess.Popen([find_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return p
    srv = nats_up()
    api_port = free_port()
    proc = subprocess.Popen([*EUNOMIA, "--data-dir", str(tmp_path / "data"), "--nats", url, "up", "--external-nats",
                             "--only", "api", "--api-port", str(api_port), "--no-podman-api"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{api_port}"
    try:
        assert until_sync(lambda: health(base) == 200, 60)
        srv.terminate()
        srv.wait()
        assert until_sync(lambda: health(base) == 503, 30), "healthz still ok with the bus down"
        assert requests.get(f"{base}/healthz", timeout=2).json()["bus_connected"] is False
        srv = nats_up()
        assert until_sync(lambda: health(base) == 200, 60), "healthz not ok after the bus came back"
    finally:
        rc, secs = stop(proc)
        srv.terminate()
        srv.wait()
    assert rc == 0 and secs <= STOP_S
