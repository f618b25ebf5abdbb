"""Kernel time per BPF program of the probe under a workload (kernel.bpf_stats_enabled):
which programs cost what, with the default rules' filter plan loaded.

    python -m bench.prog_cost [--seconds 5] [--workload nginx|open|exec|walk]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench.overhead_bench import Nginx, build_helper, printed_seconds, walk
from services.alerter.config import DEFAULT_RULES_DIR, rule_files
from services.alerter.engine import load_rules
from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def prog_stats(bpf) -> dict[str, tuple[int, int]]:
    out = {}
    for name, fn in bpf.funcs.items():
        try:
            info = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        except OSError:
            continue
        vals = dict(line.split(":\t") for line in info.splitlines() if ":\t" in line)
        out[name.decode()] = (int(vals.get("run_time_ns", 0)), int(vals.get("run_cnt", 0)))
    return out


async def run(a) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="progcost-"))
    plan = load_rules(rule_files((DEFAULT_RULES_DIR,))).filter_plan("bench", 7)
    old = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp / "js")) as srv:
            common = CommonConfig(nats_url=srv.url, node="progcost", data_dir=tmp)
            async with ProbeService(ProbeConfig(exclude_children=False), common) as probe:
                probe.load_plan(plan)
                stop = asyncio.Event()
                task = asyncio.create_task(probe.run(stop))
                await asyncio.sleep(2)
                before = prog_stats(probe.bpf)
                if a.workload == "nginx":
                    with Nginx(tmp, 1) as ng:
                        rate = await asyncio.to_thread(ng.wrk, a.seconds)
                    print(f"nginx: {rate:,.0f} req/s")
                elif a.workload == "walk":
                    print(f"walk: {await asyncio.to_thread(walk, 1):.3f} s")
                else:
                    helper = build_helper(tmp)
                    cmd = [*helper, a.workload, str(a.n), *([str(tmp / "f")] if a.workload == "open" else [])]
                    print(f"{a.workload}: {await asyncio.to_thread(printed_seconds, cmd):.3f} s")
                after = prog_stats(probe.bpf)
                stop.set()
                await task
    finally:
        STATS.write_text(old)
    rows = [(after[k][0] - before.get(k, (0, 0))[0], after[k][1] - before.get(k, (0, 0))[1], k) for k in after]
    total = sum(r[0] for r in rows)
    print(f"kernel time in probe programs: {total / 1e6:.1f} ms")
    for ns, cnt, name in sorted(rows, reverse=True)[:25]:
        if cnt:
            print(f"{ns / 1e6:9.1f} ms {cnt:10,d} runs {ns / cnt:7.0f} ns/run  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--workload", default="nginx", choices=("nginx", "open", "exec", "walk"))
    ap.add_argument("--n", type=int, default=100000)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
