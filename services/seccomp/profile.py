"""Build an OCI/Docker seccomp profile from the syscall numbers a container made.

The recorded set already holds what runc's init did in the container's
cgroup (it joins the cgroup before it execs the entrypoint), when the probe
ran from container start. BASELINE adds the few syscalls a container cannot
start without, so a profile recorded from a container that was already
running (and so missed its start) still lets a new container start.
"""
from __future__ import annotations

from collections.abc import Iterable

from .syscall_names import NAMES, NUMBERS

ARCHITECTURES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
EPERM = 1

# What runs in the container after runc installs the filter and before the
# entrypoint runs: runc 1.1 loads seccomp before dropping privileges unless
# no_new_privileges is set, so its finalizeNamespace (setgroups/setuid/setgid,
# capset, prctl, chdir, getcwd's "is the cwd safe" check, fstatfs's "is
# /proc/self/fd procfs" check, closing fds found there), the exec-fifo
# handshake (openat, write, close), the Go runtime (futex, signals, sleeps,
# netpoller) and finally execve, plus a static binary's first steps. Verified
# with runc 1.1.5 + podman 4.3: a profile of a container's steady-state loop
# (recorded after its start) plus BASELINE starts a new container.
BASELINE: tuple[str, ...] = (
    # exec and exit
    "execve", "exit", "exit_group",
    # runc finalizeNamespace / exec fifo
    "capget", "capset", "prctl", "setgroups", "setuid", "setgid", "setresuid", "setresgid",
    "chdir", "fchdir", "getcwd", "openat", "close", "read", "write", "fcntl", "getdents64", "newfstatat", "fstat",
    "fstatfs", "getppid", "getpid", "gettid",
    # Go runtime of runc init
    "futex", "rt_sigreturn", "rt_sigaction", "rt_sigprocmask", "sigaltstack", "tgkill",
    "nanosleep", "sched_yield", "epoll_pwait", "epoll_ctl", "madvise",
    # process start (loader / libc init)
    "brk", "mmap", "munmap", "mprotect", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
    "prlimit64",
)


def unknown_numbers(numbers: Iterable[int]) -> list[int]:
    """Numbers with no x86_64 name (e.g. a newer kernel's syscalls)."""
    return sorted({n for n in numbers if n not in NAMES})


def syscall_names(numbers: Iterable[int], baseline: Iterable[str] = BASELINE) -> list[str]:
    """Sorted, de-duplicated names of `numbers` plus `baseline`; unknown numbers are skipped."""
    names = {NAMES[n] for n in numbers if n in NAMES}
    for name in baseline:
        if name not in NUMBERS:
            raise ValueError(f"baseline syscall {name!r} is not an x86_64 syscall")
        names.add(name)
    return sorted(names)


def build_profile(numbers: Iterable[int], baseline: Iterable[str] = BASELINE) -> dict:
    """A seccomp profile allowing exactly `numbers` (+ `baseline`), EPERM for the rest."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": [{"names": syscall_names(numbers, baseline), "action": "SCMP_ACT_ALLOW"}],
    }
