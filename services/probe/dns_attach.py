"""Attach bpf/dns.bpf.c's cgroup_skb programs to the cgroup-v2 root.

Attached with BPF_F_ALLOW_MULTI, so programs of the container runtime or
other tools on the same cgroup keep running; detached on close. Where there
is no cgroup-v2 hierarchy (or the kernel refuses), DNS events are disabled
with a logged reason and everything else carries on.
"""
from __future__ import annotations

import os
from pathlib import Path

from shared import log

_log = log.get("probe.dns")
BPF_F_ALLOW_MULTI = 2
FUNCS = (("dns_egress", "CGROUP_INET_EGRESS"), ("dns_ingress", "CGROUP_INET_INGRESS"))


def cgroup2_root(mounts: str = "/proc/self/mounts") -> Path | None:
    """The mount point of the cgroup-v2 hierarchy (/sys/fs/cgroup or, hybrid, .../unified)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    roots = [line.split()[1] for line in lines if len(line.split()) > 2 and line.split()[2] == "cgroup2"]
    return Path(min(roots, key=len)) if roots else None


class DnsAttachment:
    """The two programs attached to the cgroup-v2 root; `error` says why not."""

    def __init__(self, bpf) -> None:
        self.bpf = bpf
        self.fd: int | None = None
        self.attached: list[tuple[object, object]] = []
        self.error: str | None = None

    def attach(self) -> "DnsAttachment":
        from bcc import BPF, BPFAttachType
        root = cgroup2_root()
        if root is None:
            self.error = "no cgroup2 hierarchy mounted: DNS events are off"
            return self
        try:
            self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            for name, attach_type in FUNCS:
                fn = self.bpf.load_func(name.encode(), BPF.CGROUP_SKB)
                kind = getattr(BPFAttachType, attach_type)
                BPF.attach_func(fn, self.fd, kind, BPF_F_ALLOW_MULTI)
                self.attached.append((fn, kind))
        except Exception as e:  # old kernel, no cgroup_skb: named, the rest runs
            self.error = f"cgroup_skb programs on {root} not attached ({e}): DNS events are off"
            self.close()
        return self

    def close(self) -> None:
        from bcc import BPF
        for fn, kind in self.attached:
            try:
                BPF.detach_func(fn, self.fd, kind)
            except Exception as e:
                _log.warning("detaching %s from the cgroup root failed: %s", fn.name, e)
        self.attached.clear()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
