"""Stopping the probe's programs at once, and leaving the kernel's slow teardown to a reaper.

Closing one tracepoint perf event costs the kernel a tracepoint grace period (measured here:
~70 ms each, serialised under its event_mutex, so ~8 s for the probe's ~120 tracepoints) and the
process that drops the last reference waits for it, also at exit. So on stop every perf event is
first disabled (the programs stop running within microseconds), then a small child process takes
a copy of the descriptors and closes them after we are gone: our exit does not wait for the
kernel's bookkeeping. Raw tracepoint links detach without a grace period and are closed here."""
from __future__ import annotations

import fcntl
import os
import subprocess
import threading

from shared import log

_log = log.get("probe.detach")

PERF_EVENT_IOC_DISABLE = 0x2401
REAPER = ["/bin/cat"]  # holds the descriptors until its stdin (our end of a pipe) closes


def perf_event_fds(bpf) -> list[int]:
    """Every perf event descriptor bcc opened for `bpf` (tracepoints and perf events),
    taken out of its bookkeeping so its own cleanup does not close them again."""
    fds = list(bpf.tracepoint_fds.values())
    bpf.tracepoint_fds.clear()
    for per_cpu in bpf.open_perf_events.values():
        fds.extend(per_cpu.values())
    bpf.open_perf_events.clear()
    return fds


def disable(fds: list[int]) -> None:
    """Stop the programs behind these perf events now (no grace period is waited for)."""
    for fd in fds:
        try:
            fcntl.ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)
        except OSError:
            pass


def close_links(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def hand_to_reaper(fds: list[int]) -> bool:
    """Give `fds` to a reaper process and close ours; True when the reaper took them.
    Without one (no /bin/cat, spawn refused) we close them ourselves, paying the wait."""
    if not fds:
        return True
    try:
        reaper = subprocess.Popen(REAPER, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, pass_fds=fds, start_new_session=True)
    except OSError as e:
        _log.warning("no reaper for %d perf events (%s): closing them here (~70 ms each)", len(fds), e)
        close_links(fds)
        return False
    close_links(fds)        # the reaper still holds each: no teardown here
    reaper.stdin.close()    # EOF: the reaper exits and the kernel tears down in its exit
    threading.Thread(target=reaper.wait, name="reap-detacher", daemon=True).start()
    return True


def detach_tracepoints(bpf, tps) -> list[str]:
    """Detach these tracepoints of `bpf` (stopped now, torn down by a reaper);
    the names of those that were not attached."""
    fds, missing = [], []
    for tp in tps:
        fd = bpf.tracepoint_fds.pop(tp, None)
        if fd is None:
            missing.append(tp.decode())
        else:
            fds.append(fd)
    disable(fds)
    hand_to_reaper(fds)
    return missing


def release_bpf(bpf, links: list[int]) -> None:
    """Disable every program of `bpf` now, detach raw tracepoint links, hand the perf events
    to a reaper, then free bcc's module (maps and programs: fast)."""
    fds = perf_event_fds(bpf)
    disable(fds)
    close_links(links)
    for tp in list(bpf.raw_tracepoint_fds):
        bpf.detach_raw_tracepoint(tp)
    hand_to_reaper(fds)
    _forget_lost_programs(bpf)
    bpf.cleanup()


def _forget_lost_programs(bpf) -> None:
    """A program whose descriptor is no longer open (something closed a number it did not own) is
    named and left out of bcc's cleanup, which would otherwise stop at it and release nothing after.
    (libbcc's symbol cache once did so; the profiler no longer uses it: services/probe/elfsyms.py.)"""
    for name, fn in list(bpf.funcs.items()):
        try:
            fcntl.fcntl(fn.fd, fcntl.F_GETFD)
        except OSError:
            _log.error("BPF program %s: its descriptor %d was closed before the release", name.decode(), fn.fd)
            del bpf.funcs[name]
