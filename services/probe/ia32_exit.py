"""The ia32 exit program, attached when it is needed (bpf/syscalls_ia32.bpf.c).

A program on raw sys_exit runs on every syscall of the node, so i32_sys_exit is
only loaded at start: its descriptor goes into the sys_enter program's tail-call
slot, and until it is attached an ia32 call of interest is reported from its
entry with the result unknown. `poll()` attaches it once the kernel has seen
such a call (and sets i32_exit_live, which ends the entry-side reports); mode
"always" attaches it at start, "never" leaves every ia32 call to its entry report.
"""
from __future__ import annotations

import ctypes as ct
import os

from shared import log

from .detach import close_links

_log = log.get("probe.ia32")


class Ia32Exit:
    """`attached` once i32_sys_exit is on raw sys_exit; `error` says why it cannot be."""

    def __init__(self, bpf, mode: str) -> None:
        from bcc import BPF
        self.mode = mode
        self.attached = False
        self.error: str | None = None
        self.links: list[int] = []
        fn = bpf.load_func(b"i32_sys_exit", BPF.RAW_TRACEPOINT)
        self.prog_fd = os.dup(fn.fd)  # kept for a later attach, whatever becomes of bcc's module
        bpf[b"i32_exit_prog"][ct.c_int(0)] = ct.c_int(self.prog_fd)
        try:  # the environment scan of an ia32 execve: tail-called from sys_enter, never attached
            env = bpf.load_func(b"i32_env_scan", BPF.RAW_TRACEPOINT)
            bpf[b"i32_env_prog"][ct.c_int(0)] = ct.c_int(env.fd)
        except Exception as e:  # each ia32 execve is then counted as a lost execenv scan
            _log.error("ia32 execve environment scan not loaded: %s", e)
        self.seen, self.live = bpf[b"i32_seen"], bpf[b"i32_exit_live"]
        if mode == "always":
            self.attach("always attached (probe.ia32_exit)")

    def poll(self) -> bool:
        """Attach if an ia32 call has been seen; True when this call attached it."""
        if self.attached or self.error or self.mode == "never" or not self.seen[self.seen.Key(0)].value:
            return False
        return self.attach("an ia32 call was seen")

    def attach(self, why: str) -> bool:
        from bcc.libbcc import lib
        fd = lib.bpf_attach_raw_tracepoint(self.prog_fd, b"sys_exit")
        if fd < 0:
            self.error = f"attaching i32_sys_exit to raw tracepoint sys_exit failed ({ct.get_errno()})"
            _log.error("%s: ia32 calls keep going out with their result unknown", self.error)
            return False
        self.links.append(fd)
        self.live[self.live.Key(0)] = self.live.Leaf(1)
        self.attached = True
        _log.info("ia32 exit program attached: %s", why)
        return True

    def take_links(self) -> list[int]:
        """Hand the attach links to the caller, who closes them (each descriptor has one closer:
        a second close could hit a number the process has given to something else since)."""
        links, self.links = self.links, []
        return links

    def close(self) -> None:
        close_links(self.links)
        if self.prog_fd >= 0:
            close_links([self.prog_fd])
            self.prog_fd = -1
