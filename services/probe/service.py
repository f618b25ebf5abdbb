"""ProbeService: kernel events from bpf/ to `eunomia.raw.<node>`, in kernel order.

A reader thread polls the ring buffer (short timeout, so stop is honoured),
decodes records and hands lists of events to the event loop through a
bounded asyncio queue (a full queue drops and counts). The loop publishes
them in batches on the node's one raw subject, answers control requests and
copies the kernel's counters (lost, filtered, per-cgroup counts) into Stats.

What the kernel emits follows the filter plan (shared/filterplan.py): the
alerter sends it on `eunomia.ctl.probes` (and answers {"op": "plan"} on
`eunomia.ctl.alerter`, which the probe asks at start until one replies).
Until a plan arrives, and always with `capture="all"`, everything is emitted.
"""
from __future__ import annotations

import asyncio
import mmap
import os
import sys
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import nats.errors
import orjson

from shared import bus as busmod, log, subjects
from shared.config import CommonConfig
from shared.filterplan import FilterPlan, PlanError
from shared.stats import Stats, StatsPublisher

from . import loader
from .config import ProbeConfig
from .decode import DEDUP_HASH, KIND_NAMES, KIND_NUMBERS, DecodeError, Decoder
from .dedup import KINDS as DEDUP_KINDS, Dedup
from .flows import FlowReader
from .plan_maps import PlanMaps
from .ringbuf import RingReader

try:  # written with bpf/syscalls.bpf.c by the seccomp side; optional here
    from . import syscall_profile
except ImportError:  # pragma: no cover
    syscall_profile = None

_log = log.get("probe")

CLASS_NAMES = ("exec", "file", "net")
ROOT_CGROUP = 1
PATH_WALK_FAILURES = ("too_deep_or_long", "unreadable")  # pw_counts in bpf/file.bpf.c
MAX_DRAIN = 4096  # records per hand-over to the event loop
PRUNE_INTERVAL_S = 30.0   # how often to look for cgroups that are gone
PRUNE_GRACE_S = 300.0     # how long a gone cgroup's counters stay visible


def proc_parents() -> dict[int, int]:
    """{pid: ppid} of every process now running (seeds the kernel's parents map)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1:
            out[int(d.name)] = int(fields[1])
    return out


def runs_our_program(pid: int) -> bool:
    """Whether `pid` runs the same interpreter as this probe (an Eunomia service)."""
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return False
    return exe == os.path.realpath(sys.executable)


class ProbeService:
    name = "probe"

    def __init__(self, cfg: ProbeConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.node = common.node
        self.stats = Stats("probe")
        self.decoder = Decoder(self.node)
        self.bpf = None
        self.plan: loader.SourcePlan | None = None
        self.excluded: set[int] = set()
        self._stack = AsyncExitStack()
        self._queue: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=cfg.queue_batches)
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self.reader_paused = threading.Event()
        self._reader_error: BaseException | None = None
        self._ring: RingReader | None = None
        self._lost_seen = 0
        self._last_prune = float("-inf")
        self._gone_since: dict[int, float] = {}
        self.bus: busmod.Bus | None = None
        self.subject = subjects.raw(self.node)
        self.plan_maps: PlanMaps | None = None
        self._filtered_seen: dict[int, int] = {}
        # no dedup when capturing everything: that stream is for forensics
        self.dedup = Dedup(self.node) if cfg.dedup_window_ms and cfg.capture == "plan" else None
        self._unresolved_seen: dict[str, int] = {}  # pw_counts already reported
        self.per_syscall = False  # raw_syscalls:sys_enter attached (see _keep_per_syscall_program)
        self.flows: FlowReader | None = None  # connections aggregated in the kernel (bpf/net.bpf.c)

    # ---- life cycle -------------------------------------------------------------

    async def __aenter__(self) -> "ProbeService":
        loop = asyncio.get_running_loop()
        self.plan = loader.plan_sources()  # raises ProbeLoadError if tracefs is not mounted
        for err in self.plan.errors:  # a missing kernel feature: named, the rest carries on
            _log.warning("%s", err)
        self.stats.set("probe_tracepoints_missing", len(self.plan.missing))
        self.stats.inc("probe_lost_events_total", 0)  # exported (as 0) from the first heartbeat
        try:
            self.bpf = await loop.run_in_executor(
                None, loader.compile_and_attach, self.plan, self.cfg.ringbuf_pages, self.cfg.wakeup_every)
            self._configure_kernel()
            await loop.run_in_executor(None, self._keep_per_syscall_program)
            self.bus = await self._stack.enter_async_context(
                busmod.connect(self.common.servers, self.stats, name=f"probe-{self.node}"))
            await self._stack.enter_async_context(
                StatsPublisher(self.bus, self.stats, self.node, self.common.stats_interval))
            await self.bus.subscribe_raw(subjects.ctl_probe(self.node), self._on_ctl)
            await self.bus.subscribe_raw(subjects.CTL_PROBES, self._on_plan_broadcast)
            if self.cfg.exclude_own_services:
                await self.bus.subscribe_raw(subjects.STATS_ALL, self._on_stats)
            self._ring = RingReader(self.bpf[b"events"].map_fd, self.cfg.ringbuf_pages * mmap.PAGESIZE)
            self._reader = threading.Thread(target=self._read_loop, args=(loop,), name="probe-ringbuf",
                                            daemon=True)
            self._reader.start()
        except BaseException:
            await self._release()
            raise
        _log.info("probe loaded %s (%d tracepoints); missing: %s", [p.name for p in self.plan.files],
                  self.bpf.num_open_tracepoints(), self.plan.missing or "none")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._release()

    async def _release(self) -> None:
        self._reader_stop.set()
        if self._reader:
            await asyncio.get_running_loop().run_in_executor(None, self._reader.join, 5)
            self._reader = None
        try:
            await self._publish_queued()
        except Exception:
            pass
        await self._stack.aclose()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self.bpf is not None:  # detaching ~100 tracepoints takes seconds: not on the loop
            await asyncio.get_running_loop().run_in_executor(None, self.bpf.cleanup)
            self.bpf = None

    def _configure_kernel(self) -> None:
        """Exclusions and parents first, then the plan's kind switches (which start the flow)."""
        self.exclude([os.getpid(), *self.cfg.exclude_pids])
        parents = self.bpf[b"parents"]
        for pid, ppid in proc_parents().items():
            parents[parents.Key(pid)] = parents.Leaf(ppid)
        has_files = self.plan.has("file.bpf.c")
        if has_files:
            win = self.bpf[b"dedup_window"]
            win[win.Key(0)] = win.Leaf(self.cfg.dedup_window_ms * 1_000_000 if self.dedup else 0)
        else:
            self.dedup = None
        self.plan_maps = PlanMaps(self.bpf, KIND_NUMBERS, has_files)
        if self.plan.has("net.bpf.c"):
            self.flows = FlowReader(self.bpf, self.node)
        # everything the config allows until the alerter's plan arrives (always, with capture "all")
        self.plan_maps.load(FilterPlan.capture_all(self.cfg.kinds, f"capture {self.cfg.capture}"), self.cfg.kinds)

    def _keep_per_syscall_program(self) -> None:
        """raw_syscalls:sys_enter runs on every syscall of the node (it alone costs a
        syscall-heavy process more than all other tracing): attached only when syscall
        profiles are wanted or module loads need it (no module tracepoints here)."""
        if not self.plan.has("syscalls.bpf.c"):
            return
        no_tps = any(tp.startswith("syscalls:sys_enter_") and tp.endswith("init_module") for tp in self.plan.missing)
        mode = self.cfg.module_fallback
        fallback = no_tps and (mode == "on" or (mode == "auto" and Path("/proc/modules").exists()))
        self.per_syscall = self.cfg.syscall_profiles or fallback
        if not self.per_syscall:
            self.bpf.detach_tracepoint(b"raw_syscalls:sys_enter")
        _log.info("per-syscall program %s (syscall profiles %s, module-load fallback %s)",
                  "attached" if self.per_syscall else "detached", self.cfg.syscall_profiles, fallback)

    def load_plan(self, plan: FilterPlan) -> dict:
        """Swap the kernel's filter to `plan` (ignored with capture "all")."""
        if self.cfg.capture == "all":
            return {"ignored": "capture is 'all'", **self.plan_maps.summary()}
        summary = self.plan_maps.load(plan, self.cfg.kinds)
        self.stats.inc("probe_plan_loads_total")
        self.stats.set("probe_plan_kinds", len(summary["kinds"]))
        _log.info("filter plan from %s: %d kinds, %d prefix and %d suffix entries; any path: %s",
                  plan.source or "?", len(summary["kinds"]), summary["prefix_entries"], summary["suffix_entries"],
                  summary["any_path"] or "none")
        return summary

    async def _ask_plan(self) -> None:
        """Ask the alerter for its plan until one answers, then every plan_refresh_s:
        a probe that missed a broadcast (restarting, reconnecting) catches up."""
        while self.cfg.capture == "plan":
            got = False
            try:
                reply = await self.bus.request_json(subjects.CTL_ALERTER, {"op": "plan"}, timeout=1.0)
                if isinstance(reply, dict) and "plan" in reply:
                    plan = FilterPlan.from_dict(reply["plan"])
                    got = True
                    if self.plan_maps.plan is None or plan.to_dict() != self.plan_maps.plan.to_dict():
                        self.load_plan(plan)
            except PlanError as e:
                self.stats.inc("probe_ctl_errors_total")
                _log.warning("alerter sent a bad filter plan: %s", e)
            except (asyncio.TimeoutError, nats.errors.Error) as e:  # no alerter (yet)
                _log.debug("no filter plan from an alerter: %s", e)
            except Exception:
                self.stats.inc("probe_plan_errors_total")
                _log.exception("loading the filter plan failed")
            await asyncio.sleep(self.cfg.plan_refresh_s if got else self.cfg.plan_retry_s)

    def exclude(self, pids) -> list[int]:
        """Add pids to the kernel's exclusion map; returns the ones that were new."""
        table = self.bpf[b"excluded"]
        new = [int(p) for p in pids if int(p) > 0 and int(p) not in self.excluded]
        for pid in new:
            try:
                table[table.Key(pid)] = table.Leaf(1)
            except Exception as e:  # map full (1024 pids)
                self.stats.inc("probe_exclude_failed_total")
                _log.error("cannot exclude pid %d: %s", pid, e)
                continue
            self.excluded.add(pid)
        self.stats.set("probe_excluded_pids", len(self.excluded))
        return new

    # ---- reader thread ----------------------------------------------------------

    def _read_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        ring, timeout = self._ring, self.cfg.poll_timeout_ms / 1000
        try:
            while not self._reader_stop.is_set():
                if self.reader_paused.is_set():  # benchmarks fill the ring, then time its drain
                    self._reader_stop.wait(timeout)
                    continue
                records = ring.drain(MAX_DRAIN)
                if not records:
                    ring.wait(timeout)  # most records come without a wakeup: the timeout paces us
                    continue
                events, bad = [], 0
                for rec in records:
                    try:
                        events.append(self.decoder.decode(rec))
                    except DecodeError as e:
                        bad += 1
                        _log.warning("dropped undecodable ring-buffer record: %s", e)
                loop.call_soon_threadsafe(self._hand_over, events, bad)
        except BaseException as e:  # noqa: BLE001 - reported by run()
            self._reader_error = e
            _log.exception("ring buffer reader failed")

    def _hand_over(self, events: list[dict], bad: int) -> None:
        if bad:
            self.stats.inc("probe_decode_errors_total", bad)
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            self.stats.inc("probe_queue_dropped_events_total", len(events))

    # ---- event loop side ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        counters = asyncio.create_task(self._counters_loop(), name="probe-counters")
        asker = asyncio.create_task(self._ask_plan(), name="probe-plan")
        stopper = asyncio.create_task(stop.wait())
        getter: asyncio.Task | None = None
        try:
            while not stop.is_set():
                if self._reader_error is not None:
                    raise RuntimeError(f"ring buffer reader died: {self._reader_error}")
                getter = getter or asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({getter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await self._publish(getter.result())
                    getter = None
        finally:
            if getter is not None:
                getter.cancel()
            stopper.cancel()
            counters.cancel()
            asker.cancel()
            await asyncio.gather(counters, stopper, asker, return_exceptions=True)
            self.read_counters()

    async def _publish(self, events: list[dict]) -> None:
        counts: dict[str, int] = {}
        dedup = self.dedup
        for ev in events:
            kind = ev["kind"]
            counts[kind] = counts.get(kind, 0) + 1
            if kind in DEDUP_KINDS:
                if dedup is not None:
                    dedup.remember(ev)
                else:
                    ev.pop(DEDUP_HASH, None)
        size = self.cfg.batch_size
        for i in range(0, len(events), size):
            chunk = events[i:i + size]
            try:
                await self.bus.publish_batch(self.subject, chunk)
            except Exception as e:  # a broken connection: counted, the reader carries on
                self.stats.inc("bus_publish_failed_events_total", len(chunk))
                _log.error("publish of %d events failed: %s", len(chunk), e)
        for kind, n in counts.items():
            self.stats.inc("probe_events_total", n, kind=kind)

    async def _publish_queued(self) -> None:
        while not self._queue.empty():
            await self._publish(self._queue.get_nowait())

    async def _counters_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.counters_interval)
            self.read_counters()
            self.decoder.resync_clock()
            await self.report_repeats()
            await self.report_flows()

    async def report_flows(self) -> None:
        """Flows that changed since the last report go out as `flow` events (deltas)."""
        if self.flows is None:
            return
        flows = await asyncio.get_running_loop().run_in_executor(None, self.flows.collect)
        f = self.flows
        self.stats.set("probe_flows_active", f.active)
        self.stats.set("probe_flows_map_full", f.map_full)  # new flows not tracked: the map was full
        if flows:
            await self._publish(flows)

    async def report_repeats(self) -> None:
        """Repeat counts of deduplicated windows that are over go out as events."""
        if self.dedup is None or self.bpf is None:
            return
        repeats = self.dedup.sweep(self.bpf[b"dedup"], KIND_NAMES, self.cfg.dedup_window_ms * 1_000_000,
                                   time.clock_gettime_ns(time.CLOCK_BOOTTIME), self.decoder.boot_to_wall)
        self.stats.inc("probe_dedup_repeats_total", sum(e["repeat"] for e in repeats))
        self.stats.set("probe_dedup_unmatched_repeats", self.dedup.orphans)
        if repeats:
            await self._publish(repeats)

    def read_counters(self) -> None:
        """Kernel counters -> Stats: lost events, per-cgroup event counts."""
        if self.bpf is None:
            return
        lost = sum(sum(v) for v in self.bpf[b"lost"].values())
        if lost > self._lost_seen:
            self.stats.inc("probe_lost_events_total", lost - self._lost_seen)
            self._lost_seen = lost
        else:
            self.stats.inc("probe_lost_events_total", 0)  # present (as 0) from the start
        for k, v in self.bpf[b"filtered"].items():
            n, seen = sum(v), self._filtered_seen.get(k.value, 0)
            if n > seen and k.value in KIND_NAMES:
                self.stats.inc("probe_filtered_events_total", n - seen, kind=KIND_NAMES[k.value])
                self._filtered_seen[k.value] = n
        if self.plan.has("file.bpf.c"):  # paths the kernel could not make absolute (sent as written)
            for i, why in enumerate(PATH_WALK_FAILURES):
                n = sum(self.bpf[b"pw_counts"][i])
                self.stats.inc("probe_path_unresolved_total", n - self._unresolved_seen.get(why, 0), reason=why)
                self._unresolved_seen[why] = n
        for k, v in self.bpf[b"cg_counts"].items():
            if k.value <= ROOT_CGROUP:
                continue
            for i, cls in enumerate(CLASS_NAMES):
                if v.n[i]:
                    self.stats.set("probe_cgroup_events", v.n[i], cgroup_id=k.value, **{"class": cls})
        self._prune_cgroups()
        if syscall_profile is not None and self.plan.has("syscalls.bpf.c"):
            syscall_profile.export(self.bpf, self.stats)

    def _prune_cgroups(self) -> None:
        """Forget counters of cgroups gone for PRUNE_GRACE_S (map and gauge series stay bounded)."""
        now = time.monotonic()
        if syscall_profile is None or now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        live = syscall_profile.live_cgroup_ids()
        if not live:  # no cgroup-v2 tree visible: never guess
            return
        table = self.bpf[b"cg_counts"]
        gone = {k.value for k in table.keys()} - live
        self._gone_since = {cg: self._gone_since.get(cg, now) for cg in gone}
        series = self.stats.gauges.get("probe_cgroup_events", {})
        for cg, since in list(self._gone_since.items()):
            if now - since < PRUNE_GRACE_S:
                continue
            try:
                del table[table.Key(cg)]
            except KeyError:
                pass
            for key in [key for key in series if ("cgroup_id", str(cg)) in key]:
                del series[key]
            del self._gone_since[cg]

    # ---- bus handlers -------------------------------------------------------------

    async def _on_stats(self, msg) -> None:
        try:
            snap = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            self.stats.inc("probe_bad_stats_messages_total")
            return
        if isinstance(snap, dict) and snap.get("node") == self.node and isinstance(snap.get("pid"), int):
            if snap["pid"] not in self.excluded:
                if not runs_our_program(snap["pid"]):
                    # anyone on the bus could announce a pid: only our own programs are hidden
                    self.stats.inc("probe_exclude_refused_total")
                    _log.warning("refused to exclude pid %d announced as service %r: it does not run "
                                 "Eunomia's interpreter", snap["pid"], snap.get("service"))
                    return
                new = self.exclude([snap["pid"]])
                if new:
                    _log.info("excluding pid %d (service %s)", snap["pid"], snap.get("service"))

    async def _on_plan_broadcast(self, msg) -> None:
        """`eunomia.ctl.probes` reaches every node: only the plan is taken from it."""
        try:
            req = orjson.loads(msg.data)
            if not isinstance(req, dict) or req.get("op") != "plan":
                raise PlanError(f"only op 'plan' is taken on {msg.subject}")
            self.load_plan(FilterPlan.from_dict(req.get("plan")))
        except (orjson.JSONDecodeError, PlanError) as e:
            self._ctl_error(f"{msg.subject}: {e}")

    async def _on_ctl(self, msg) -> None:
        reply = self.control(msg.data)
        if msg.reply:
            await msg.respond(orjson.dumps(reply))

    def control(self, data: bytes) -> dict:
        """One control request (JSON object with "op") -> reply dict; bad requests get {"error"}."""
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            return self._ctl_error(f"request is not JSON: {e}")
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return self._ctl_error('request must be a JSON object with a string "op"')
        op = req["op"]
        if op == "status":
            self.read_counters()
            return {"node": self.node, "pid": os.getpid(), "files": [p.name for p in self.plan.files],
                    "dropped_files": self.plan.dropped, "missing_tracepoints": self.plan.missing,
                    "errors": self.plan.errors, "tracepoints": self.bpf.num_open_tracepoints(),
                    "kinds": list(self.cfg.kinds), "excluded_pids": sorted(self.excluded),
                    "capture": self.cfg.capture, "plan": self.plan_maps.summary(),
                    "counters": self.stats.snapshot(self.node)["counters"]}
        if op == "plan":
            try:
                return {"loaded": self.load_plan(FilterPlan.from_dict(req.get("plan")))}
            except PlanError as e:
                return self._ctl_error(f'op "plan": {e}')
        if op == "exclude":
            pids = req.get("pids")
            if not isinstance(pids, list) or not all(isinstance(p, int) and p > 0 for p in pids):
                return self._ctl_error('op "exclude" needs "pids": a list of positive integers')
            return {"added": self.exclude(pids), "excluded_pids": sorted(self.excluded)}
        if op in ("syscalls", "syscalls_reset"):
            cg = req.get("cgroup_id")
            if not isinstance(cg, int) or cg <= 0:
                return self._ctl_error(f'op "{op}" needs "cgroup_id": a positive integer')
            if syscall_profile is None or not self.plan.has("syscalls.bpf.c"):
                return self._ctl_error("syscall profiles are not available (services/probe/syscall_profile.py "
                                       "and bpf/syscalls.bpf.c)")
            if not self.cfg.syscall_profiles:
                return self._ctl_error("syscall profiles are off: run the probe with syscall_profiles "
                                       "(`eunomia up --syscall-profiles`, `eunomia probe --syscall-profiles`)")
            try:
                if op == "syscalls":
                    return {"cgroup_id": cg, "syscalls": syscall_profile.dump(self.bpf, cg)}
                return {"cgroup_id": cg, "reset": syscall_profile.reset(self.bpf, cg)}
            except KeyError as e:
                return self._ctl_error(f"syscall profile maps are not loaded: {e}")
        return self._ctl_error(f"unknown op {op!r}; known: status, plan, exclude, syscalls, syscalls_reset")

    def _ctl_error(self, why: str) -> dict:
        self.stats.inc("probe_ctl_errors_total")
        _log.warning("probe control request refused: %s", why)
        return {"error": why}
