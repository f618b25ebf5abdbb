"""CPU profiles per container from bpf/profile.bpf.c.

A perf-event program samples every CPU at `hz` (software cpu-clock) and counts
(cgroup, pid, user stack, kernel stack) in the kernel. drain() reads and clears
those maps (every `window_s`, and at the edges of an on-demand profile),
symbolises the stacks and keeps one window of folded stacks per drain in a
bounded history (`history_s`): profiles are asked for by time range.

Folded stacks are root first, `;`-separated: "comm;main;work;sys_read_[k]"
(kernel frames end in "_[k]"). A user stack that does not reach a thread's
entry point (in its outermost three frames) was cut short (no frame pointers): it is shown as far as
it goes and counted in "truncated".
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from shared.schema import new_event_id

from .symbols import UNKNOWN, KernelSymbols, UserSymbols

# Outermost frames of complete user stacks (glibc, musl, Go, Rust runtimes)
ENTRY_FRAMES = ("_start", "__libc_start_main", "__libc_start_call_main", "clone", "clone3", "__clone",
                "start_thread", "__start", "_dl_start", "runtime.goexit", "runtime.rt0_go", "thread_start")
STACK_ERROR = "[stack lost]"
OTHER_STACKS = "[other stacks]"   # the samples of stacks past a stored window's bound


@dataclass
class Window:
    start_ns: int   # wall clock
    end_ns: int
    folded: dict[int, Counter] = field(default_factory=dict)     # cgroup -> Counter(folded stack -> samples)
    truncated: Counter = field(default_factory=Counter)          # cgroup -> samples with cut-short stacks


class Profiler:
    def __init__(self, bpf, hz: int, window_s: float, history_s: float) -> None:
        self.bpf, self.hz = bpf, hz
        self.window_s, self.history_s = window_s, history_s
        self.counts = bpf[b"prof_counts"]
        self.stacks = bpf[b"prof_stacks"]
        self.kstats = bpf[b"prof_stats"]
        self.ksyms = KernelSymbols()
        self.usyms = UserSymbols()
        self.history: deque[Window] = deque()
        self._lock = threading.Lock()
        self._last_ns = time.time_ns()
        self.attached = False

    def attach(self) -> None:
        from bcc import PerfSWConfig, PerfType
        self.bpf.attach_perf_event(ev_type=PerfType.SOFTWARE, ev_config=PerfSWConfig.CPU_CLOCK,
                                   fn_name=b"prof_sample", sample_freq=self.hz)
        self.attached = True
        self._last_ns = time.time_ns()

    def kernel_stats(self) -> tuple[int, int]:
        """(samples taken, samples lost because the counts map was full), since load."""
        taken = sum(self.kstats[self.kstats.Key(0)])
        lost = sum(self.kstats[self.kstats.Key(1)])
        return taken, lost

    def drain(self) -> Window:
        """Blocking: move the kernel's counts into a new history window."""
        with self._lock:
            now = time.time_ns()
            win = Window(self._last_ns, now)
            self._last_ns = now
            items = list(self.counts.items())
            for k, _ in items:
                try:
                    del self.counts[k]
                except KeyError:
                    pass
            cache: dict[tuple[int, int], list[str]] = {}
            for k, v in items:
                n = v.value
                ustack = self._user_frames(k.pid, k.ustack, cache)
                kstack = self._kernel_frames(k.kstack, cache)
                comm = k.comm.decode("utf-8", "replace") or "?"
                if ustack and not any(f in ENTRY_FRAMES for f in ustack[:3]):
                    win.truncated[k.cgroup_id] += n
                folded = ";".join([comm, *ustack, *kstack])
                win.folded.setdefault(k.cgroup_id, Counter())[folded] += n
            self.stacks.clear()
            self.usyms.forget_maps()
            self.history.append(win)
            while self.history and self.history[0].end_ns < now - self.history_s * 1e9:
                self.history.popleft()
            return win

    def _user_frames(self, pid: int, sid: int, cache: dict) -> list[str]:
        if sid < 0:
            return [] if sid == -14 else [STACK_ERROR]  # -EFAULT: no user stack (kernel thread)
        key = (pid, sid)
        if key not in cache:
            frames = self._walk(sid)
            names = [self.usyms.name(a, pid) for a in frames] if frames is not None else [STACK_ERROR]
            cache[key] = self._dedup_unknown(names[::-1])
        return cache[key]

    def _kernel_frames(self, sid: int, cache: dict) -> list[str]:
        if sid < 0:
            return []  # in user mode when sampled
        key = (-1, sid)
        if key not in cache:
            frames = self._walk(sid)
            cache[key] = ([self.ksyms.name(a) + "_[k]" for a in frames[::-1]] if frames is not None
                          else [STACK_ERROR])
        return cache[key]

    def _walk(self, sid: int) -> list[int] | None:
        try:
            return [a for a in self.stacks.walk(sid) if a]
        except KeyError:
            return None  # cleared between the sample and this drain

    @staticmethod
    def _dedup_unknown(names: list[str]) -> list[str]:
        out: list[str] = []
        for n in names:
            if n == UNKNOWN and out and out[-1] == UNKNOWN:
                continue
            out.append(n)
        return out

    def query(self, cgroup_id: int | None, start_ns: int, end_ns: int) -> dict:
        """Folded stacks of windows overlapping [start_ns, end_ns], for one cgroup or all."""
        folded: Counter = Counter()
        truncated, windows = 0, 0
        with self._lock:
            wins = [w for w in self.history if w.end_ns > start_ns and w.start_ns < end_ns]
        per_cg: Counter = Counter()
        for w in wins:
            windows += 1
            for cg, c in w.folded.items():
                if cgroup_id is None or cg == cgroup_id:
                    folded.update(c)
                    per_cg[cg] += sum(c.values())
                    truncated += w.truncated.get(cg, 0)
        return {"cgroup_id": cgroup_id, "start_ns": wins[0].start_ns if wins else start_ns,
                "end_ns": wins[-1].end_ns if wins else end_ns, "hz": self.hz, "windows": windows,
                "samples": sum(folded.values()), "truncated": truncated,
                "cgroups": {str(k): v for k, v in per_cg.most_common(50)},
                "folded": dict(folded.most_common())}


MAX_EVENT_STACK_BYTES = 128 * 1024   # folded text kept per stored event (a NATS message is 1 MiB at most)
MAX_PENDING_STACKS = 4000            # distinct stacks held per cgroup between two stored events


class StoredProfiles:
    """Drained windows summed per cgroup until `interval_s` has passed, then one "profile" event
    per cgroup for the store (continuous profiles read by time range long after the probe's own
    history). Every drain adds to it, on-demand ones too, so no sample is stored twice and a
    request for a profile makes no extra events. Bounded: the `max_cgroups` busiest cgroups,
    each with its `max_stacks` heaviest stacks and at most MAX_EVENT_STACK_BYTES of them; the
    samples of stacks left out go under OTHER_STACKS (totals stay right); cgroups left out are
    counted in `cgroups_dropped`."""

    def __init__(self, node: str, hz: int, interval_s: float, max_cgroups: int, max_stacks: int) -> None:
        self.node, self.hz, self.interval_ns = node, hz, int(interval_s * 1e9)
        self.max_cgroups, self.max_stacks = max_cgroups, max_stacks
        self.start_ns: int | None = None
        self.folded: dict[int, Counter] = {}
        self.truncated: Counter = Counter()
        self.cgroups_dropped = 0

    def add(self, win: Window) -> None:
        if self.start_ns is None:
            self.start_ns = win.start_ns
        for cg, stacks in win.folded.items():
            acc = self.folded.setdefault(cg, Counter())
            acc.update(stacks)
            if len(acc) > MAX_PENDING_STACKS:  # keep the heaviest, sum the rest
                kept = Counter(dict(acc.most_common(MAX_PENDING_STACKS - 1)))
                kept[OTHER_STACKS] += sum(acc.values()) - sum(kept.values())
                self.folded[cg] = kept
        self.truncated.update(win.truncated)

    def due(self, end_ns: int) -> list[dict]:
        """The events of the interval when it is over (else []), and a fresh interval."""
        if self.start_ns is None or end_ns - self.start_ns < self.interval_ns:
            return []
        busiest = sorted(self.folded.items(), key=lambda kv: -sum(kv[1].values()))
        self.cgroups_dropped += max(0, len(busiest) - self.max_cgroups)
        out = [self._event(cg, stacks, end_ns) for cg, stacks in busiest[:self.max_cgroups]]
        self.start_ns, self.folded, self.truncated = None, {}, Counter()
        return out

    def _event(self, cg: int, stacks: Counter, end_ns: int) -> dict:
        total = sum(stacks.values())
        kept: dict[str, int] = {}
        size = 0
        for stack, n in stacks.most_common(self.max_stacks):
            size += len(stack) + 12
            if size > MAX_EVENT_STACK_BYTES:
                break
            kept[stack] = n
        if sum(kept.values()) < total:
            kept[OTHER_STACKS] = kept.get(OTHER_STACKS, 0) + total - sum(kept.values())
        return {"id": new_event_id(self.node), "ts": end_ns, "node": self.node, "kind": "profile",
                "pid": 0, "tid": 0, "ppid": None, "uid": None, "gid": None, "comm": "", "cgroup_id": cg,
                "start_ns": self.start_ns, "end_ns": end_ns, "hz": self.hz, "samples": total,
                "truncated": self.truncated.get(cg, 0),
                "stacks_dropped": len(stacks) - (len(kept) - (OTHER_STACKS in kept)), "folded": kept}
