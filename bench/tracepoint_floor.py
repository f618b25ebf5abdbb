"""The kernel's floor under the probe: programs that return at once, attached to the same
tracepoints the probe keeps attached by default. What a workload loses to this is the price
of the attach points themselves (a syscall tracepoint puts every syscall of the node on the
kernel's slow entry path), which no work in our programs can win back.

    python -m bench.tracepoint_floor     # prints what it attaches, holds until Enter
"""
from __future__ import annotations

import re

from services.probe.detach import release_bpf
from services.probe.loader import BPF_DIR, tracefs_root, tracepoints_used
from services.probe.perf import DETAIL_TRACEPOINTS

DETACHED_BY_DEFAULT = {tp.decode() for tp in DETAIL_TRACEPOINTS} | {"raw_syscalls:sys_enter"}


def has_btf() -> bool:
    """Whether the probe compiles with kernel offsets (HAVE_KOFF): then close() is not traced
    (bpf/net.bpf.c) and the ia32 programs are (bpf/syscalls_ia32.bpf.c); without, the reverse."""
    from services.probe.btf import BTFError, vmlinux
    try:
        vmlinux()
    except BTFError:
        return False
    return True


EMPTY = b"int empty_tp(void *ctx) { return 0; }\nint empty_raw(void *ctx) { return 0; }"


def probe_attach_points(bpf_dir=BPF_DIR) -> tuple[list[str], list[str]]:
    """(tracepoints "cat:name" present on this kernel, raw tracepoint names) of bpf/*.bpf.c,
    without those the probe detaches by default."""
    tps, raws = set(), set()
    events = tracefs_root() / "events"
    btf = has_btf()
    detached = DETACHED_BY_DEFAULT | ({"syscalls:sys_enter_close"} if btf else set())
    for src in sorted(bpf_dir.glob("*.bpf.c")):
        text = src.read_text()
        for tp in tracepoints_used(text):
            if (events / tp.replace(":", "/")).is_dir() and tp not in detached:
                tps.add(tp)
        if btf or src.name != "syscalls_ia32.bpf.c":  # compiled out without kernel offsets
            raws.update(re.findall(r"^RAW_TRACEPOINT_PROBE\((\w+)\)", text, re.M))
    return sorted(tps), sorted(raws)


class EmptyPrograms:
    """Context manager: an empty program on each of the probe's attach points
    (`tracepoints` and/or `raw` ones: what each part of the floor costs)."""

    def __init__(self, tracepoints: bool = True, raw: bool = True) -> None:
        self.want_tp, self.want_raw = tracepoints, raw

    def __enter__(self) -> "EmptyPrograms":
        from bcc import BPF
        tps, raws = probe_attach_points()
        self.tracepoints, self.raw = tps if self.want_tp else [], raws if self.want_raw else []
        self.bpf = BPF(text=EMPTY)
        for tp in self.tracepoints:
            self.bpf.attach_tracepoint(tp=tp.encode(), fn_name=b"empty_tp")
        for name in self.raw:
            self.bpf.attach_raw_tracepoint(tp=name.encode(), fn_name=b"empty_raw")
        return self

    def __exit__(self, *exc: object) -> None:
        release_bpf(self.bpf, [])


if __name__ == "__main__":
    with EmptyPrograms() as e:
        print(f"{len(e.tracepoints)} tracepoints and raw {e.raw} hold empty programs; Enter ends")
        input()
