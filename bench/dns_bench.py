"""What DNS capture costs, and what the syscall-tracepoint alternative would have cost.

Two workloads, each timed untraced and with
  - skb: bpf/dns.bpf.c's cgroup_skb programs on the cgroup-v2 root (what the probe runs),
  - sys: empty programs on sys_enter/sys_exit of read, write, sendto and recvfrom (the least a
    syscall-based capture of DNS over read/write/sendto/recvfrom would attach),
alternated in one run; printed as ratios to untraced (lower is better, 1.00 = free).
  udp: 20,000 UDP round trips on loopback (not port 53: the common case, packets that are not DNS)
  file: 200,000 read()s of 64 bytes from /dev/zero (no packets at all)

    python -m bench.dns_bench
"""
from __future__ import annotations

import os
import socket
import time

from services.probe import loader
from services.probe.dns_attach import DnsAttachment

SYS_PROG = "".join(f"TRACEPOINT_PROBE(syscalls, sys_{d}_{n}) {{ return 0; }}\n"
                   for n in ("read", "write", "sendto", "recvfrom") for d in ("enter", "exit"))


def udp(n: int = 20_000) -> float:
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    pa, pb = a.getsockname(), b.getsockname()
    t = time.perf_counter()
    for _ in range(n):
        a.sendto(b"x" * 40, pb)
        b.recvfrom(100)
        b.sendto(b"y" * 60, pa)
        a.recvfrom(100)
    dt = time.perf_counter() - t
    a.close()
    b.close()
    return dt


def file_reads(n: int = 200_000) -> float:
    fd = os.open("/dev/zero", os.O_RDONLY)
    t = time.perf_counter()
    for _ in range(n):
        os.read(fd, 64)
    dt = time.perf_counter() - t
    os.close(fd)
    return dt


def main(rounds: int = 5) -> None:
    from bcc import BPF
    plan = loader.plan_sources()
    plan.files = [p for p in plan.files if p.name == "dns.bpf.c"]
    skb = loader.compile_and_attach(plan, 8, 64)
    on = skb[b"kind_on"]
    on[on.Key(25)] = on.Leaf(1)
    att = None
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for mode in ("none", "skb", "sys"):
            sysb = None
            if mode == "skb":
                att = DnsAttachment(skb).attach()
                assert att.error is None, att.error
            elif mode == "sys":
                sysb = BPF(text=SYS_PROG)
            for name, fn in (("udp", udp), ("file", file_reads)):
                results.setdefault((mode, name), []).append(fn())
            if att is not None:
                att.close()
                att = None
            if sysb is not None:
                sysb.cleanup()
    skb.cleanup()
    for name in ("udp", "file"):
        base = min(results[("none", name)])
        print(f"{name:5s} untraced {base:.3f} s   dns cgroup_skb {min(results[('skb', name)]) / base:.2f}x   "
              f"syscall tracepoints {min(results[('sys', name)]) / base:.2f}x")


if __name__ == "__main__":
    main()
