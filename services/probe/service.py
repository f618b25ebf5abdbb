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
import atexit
import mmap
import os
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import nats.errors
import orjson

from shared import bus as busmod
from shared import busauth, log, subjects
from shared.cgroupfs import GoneCgroups
from shared.config import CommonConfig
from shared.control import BAD_ARGS, BAD_REQUEST, UNAVAILABLE, Control, ControlError
from shared.filterplan import FilterPlan, PlanError
from shared.stats import Stats, StatsPublisher
from shared.tasks import cancel_and_wait

from . import loader
from .compiler_state import free_compiler_state
from .config import ProbeConfig
from .decode import DEDUP_HASH, KIND_NAMES, KIND_NUMBERS, DecodeError, Decoder
from .dedup import KINDS as DEDUP_KINDS
from .dedup import Dedup
from .detach import close_links, detach_tracepoints, release_bpf
from .dns_attach import DnsAttachment
from .exclusion import Exclusions
from .flows import FlowReader
from .ia32_exit import Ia32Exit
from .map_read import entries
from .perf import PerfReader, attach_syscall_latency, detach_detail
from .plan_maps import PlanMaps, set_host_mount_ns
from .ringbuf import RingReader

try:  # written with bpf/syscalls.bpf.c by the seccomp side; optional here
    from . import syscall_profile
except ImportError:  # pragma: no cover
    syscall_profile = None

_log = log.get("probe")

CLASS_NAMES = ("exec", "file", "net")
ROOT_CGROUP = 1
IDLE_POLL_S = 0.25   # the reader's poll once the ring has been quiet for IDLE_AFTER_S (see _read_loop)
IDLE_AFTER_S = 0.15  # past the kernel's IDLE_GAP_MS (100 ms, bpf/common.h): its next record wakes us
BURST_POLL_S = 0.002  # the first poll after a record that ended a quiet spell
PATH_WALK_FAILURES = ("too_deep_or_long", "unreadable")  # pw_counts in bpf/file.bpf.c
MAX_DRAIN = 4096  # records per hand-over to the event loop
SHUTDOWN_PUBLISH_S = 2.0  # on stop, queued events are published for this long (the rest counted)
FLOW_SNAPSHOT_WAIT_S = 5.0  # report_flows waits this long for the reader thread's snapshot
IA32_POLL_S = 0.05        # how often the lazy ia32 exit program's gate is checked
DETACH_WAIT_S = 2.0       # on stop, wait this long for detaching; process exit closes the rest


async def _to_the_end(fn) -> None:
    """Run `fn` in the executor; a caller cancelled meanwhile still waits for it to end: the start
    steps use the BPF module, which the release that follows a cancelled start destroys."""
    fut = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise


async def _bounded_in_thread(fn, timeout: float) -> None:
    """Run `fn` in a daemon thread and wait for it at most `timeout` s (an exit is never held up)."""
    done = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def target() -> None:
        try:
            fn()
        finally:
            try:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
            except RuntimeError:  # the loop is gone: nobody waits any more
                pass
    threading.Thread(target=target, name=f"bounded-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        _log.warning("%s still running after %.0f s; going on", getattr(fn, "__name__", fn), timeout)


def _resolve(fut: asyncio.Future, result: object) -> None:
    if fut.done():
        return
    if isinstance(result, Exception):
        fut.set_exception(result)
    else:
        fut.set_result(result)


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


class ProbeService:
    name = "probe"

    def __init__(self, cfg: ProbeConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.node = common.node
        self.stats = Stats("probe")
        self.decoder = Decoder(self.node)
        self.bpf = None
        self.plan: loader.SourcePlan | None = None
        self.exclusions: Exclusions | None = None
        self._stack = AsyncExitStack()
        self._queue: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=cfg.queue_batches)
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self.reader_paused = threading.Event()
        self._reader_error: BaseException | None = None
        self._flows_wanted: asyncio.Future | None = None  # report_flows asks the reader for a snapshot
        self._ring: RingReader | None = None
        self._lost_seen = 0
        self._cg_events: dict[int, int] = {}  # cgroup id -> events, as the last read_counters() found them
        self._gone_cgroups = GoneCgroups()
        self.bus: busmod.Bus | None = None
        self.subject = subjects.raw(self.node)
        self.plan_maps: PlanMaps | None = None
        self._filtered_seen: dict[int, int] = {}
        # no dedup when capturing everything: that stream is for forensics
        self.dedup = Dedup(self.node) if cfg.dedup_window_ms and cfg.capture == "plan" else None
        self._unresolved_seen: dict[str, int] = {}  # pw_counts already reported
        self.per_syscall = False  # raw_syscalls:sys_enter attached (see _keep_per_syscall_program)
        self.flows: FlowReader | None = None  # connections aggregated in the kernel (bpf/net.bpf.c)
        self.ctl = self._control()
        self.perf_ctl = self._perf_control()
        self.perf: PerfReader | None = None   # per-container histograms and counters (bpf/perf.bpf.c)
        self.profiler = None                  # CPU profiles (bpf/profile.bpf.c, services/probe/profiler.py)
        self.stored_profiles = None           # their sums for the store (profiler.StoredProfiles)
        self._latency_links: list[int] = []   # syscall latency programs' raw tracepoint links
        self.ia32_exit: Ia32Exit | None = None  # the ia32 exit program, attached once needed
        self._map_dups: list[int] = []        # map descriptors kept once bcc's module is freed
        self.perf_latest: dict = {}           # the last message published on eunomia.perf.<node>
        self._profile_drained = time.monotonic()
        self.dns: DnsAttachment | None = None  # bpf/dns.bpf.c's programs on the cgroup-v2 root

    # ---- life cycle -------------------------------------------------------------

    async def __aenter__(self) -> "ProbeService":
        loop = asyncio.get_running_loop()
        self.plan = loader.plan_sources()  # raises ProbeLoadError if tracefs is not mounted
        for err in self.plan.errors:  # a missing kernel feature: named, the rest carries on
            _log.warning("%s", err)
        self.stats.set("probe_tracepoints_missing", len(self.plan.missing))
        self.stats.inc("probe_lost_events_total", 0)  # exported (as 0) from the first heartbeat
        try:
            # each step's result is kept by the thread itself: a start cancelled meanwhile releases it
            await _to_the_end(lambda: setattr(self, "bpf", loader.compile_and_attach(
                self.plan, self.cfg.ringbuf_pages, self.cfg.wakeup_every)))
            self._exclude_ourselves()
            # map writes and program loads (the verifier takes seconds): off the loop, which other
            # services share in `eunomia up` (an API answering nothing for 1.5 s failed a test)
            await _to_the_end(self._configure_kernel)
            if self.plan.has("dns.bpf.c"):
                await _to_the_end(lambda: setattr(self, "dns", DnsAttachment(self.bpf).attach()))
                if self.dns.error:
                    _log.warning("%s", self.dns.error)
                self.stats.set("probe_dns_attached", 0 if self.dns.error else 1)
            await _to_the_end(self._keep_per_syscall_program)
            if self.cfg.free_compiler:  # every program is loaded and every map open: ~40 MB back
                await _to_the_end(lambda: setattr(self, "_map_dups", free_compiler_state(self.bpf)))
            self.bus = await self._stack.enter_async_context(
                busmod.connect(self.common.servers, self.stats, name=f"probe-{self.node}",
                               cred=busauth.for_role(self.common.data_dir, "probe", self.node)))
            await self.ctl.serve(self.bus, subjects.ctl_probe(self.node))
            await self.perf_ctl.serve(self.bus, subjects.ctl_perf(self.node))
            await self.bus.subscribe_raw(subjects.CTL_PROBES, self._on_plan_broadcast)
            self._ring = RingReader(self.bpf[b"events"].map_fd, self.cfg.ringbuf_pages * mmap.PAGESIZE)
            self._reader = threading.Thread(target=self._read_loop, args=(loop,), name="probe-ringbuf",
                                            daemon=True)
            self._reader.start()
            await self._stack.enter_async_context(  # the first heartbeat says "reading"
                StatsPublisher(self.bus, self.stats, self.node, self.common.stats_interval))
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
        await self.perf_ctl.cancel()  # profile requests still sampling
        if self._reader:
            await asyncio.get_running_loop().run_in_executor(None, self._reader.join, 5)
            self._reader = None
        try:
            await self._publish_queued(time.monotonic() + SHUTDOWN_PUBLISH_S)
        except Exception:
            pass
        await self._stack.aclose()
        if self.exclusions is not None:
            self.exclusions.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self.dns is not None:
            self.dns.close()
            self.dns = None
        if self.bpf is not None:  # the kernel's slow teardown goes to a reaper (services/probe/detach.py)
            atexit.unregister(self.bpf.cleanup)  # bcc's own exit hook would detach a second time
            bpf, self.bpf = self.bpf, None
            links = [*self._latency_links, *(self.ia32_exit.take_links() if self.ia32_exit else ())]
            self._latency_links = []  # the release closes them: nobody else may
            await _bounded_in_thread(lambda: release_bpf(bpf, links), DETACH_WAIT_S)
            close_links(self._map_dups)  # the maps' last descriptors (services/probe/compiler_state.py)
            if self.ia32_exit is not None:
                self.ia32_exit.close()

    def _exclude_ourselves(self) -> None:
        """On the loop, which watches each excluded process's pidfd; before any kind is switched on."""
        self.exclusions = Exclusions(self.bpf[b"excluded"], self.stats, children=self.cfg.exclude_children,
                                     pids=self.cfg.exclude_pids, cgroups=self.cfg.exclude_cgroups)
        self.exclusions.refresh()

    def _configure_kernel(self) -> None:
        """Parents first, then the plan's kind switches (which start the flow); in a worker thread."""
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
        if not set_host_mount_ns(self.bpf):
            _log.warning("the node's mount namespace is unknown (/proc/1 and /proc/2 ns/mnt unreadable): "
                         "kinds the rules want from containers only are sent from host processes too")
        if self.plan.has("net.bpf.c"):
            self.flows = FlowReader(self.bpf, self.node)
        if self.plan.has("syscalls_ia32.bpf.c"):
            try:
                self.ia32_exit = Ia32Exit(self.bpf, self.cfg.ia32_exit)
            except Exception as e:  # no BTF offsets here: the ia32 programs are compiled out
                _log.warning("ia32 exit program not loaded: %s", e)
        self._configure_perf()
        # everything the config allows until the alerter's plan arrives (always, with capture "all")
        self.plan_maps.load(FilterPlan.capture_all(self.cfg.kinds, f"capture {self.cfg.capture}"), self.cfg.kinds)

    def _configure_perf(self) -> None:
        """Histograms and counters (switched in the kernel), and the sampling profiler."""
        if self.plan.has("perf.bpf.c"):
            PerfReader.switch(self.bpf, self.cfg.perf)
            if self.cfg.perf:
                self.perf = PerfReader(self.bpf, cpu_from_cgroupfs=not self.cfg.perf_detail)
        if self.plan.has("perf.bpf.c") and not (self.cfg.perf and self.cfg.perf_detail):
            for err in detach_detail(self.bpf):
                _log.debug("perf detail program not detached: %s", err)
        if self.plan.has("perf.bpf.c") and self.cfg.perf and self.cfg.syscall_latency:
            try:  # on every syscall: only when asked for
                self._latency_links = attach_syscall_latency(self.bpf)
            except Exception as e:
                self.stats.inc("probe_perf_attach_failed_total")
                _log.error("syscall latency not attached: %s", e)
        if self.plan.has("profile.bpf.c") and self.cfg.profile_hz:
            from .profiler import Profiler, StoredProfiles
            prof = Profiler(self.bpf, self.cfg.profile_hz, self.cfg.profile_window_s, self.cfg.profile_history_s)
            try:
                prof.attach()
                self.profiler = prof
                if self.cfg.profile_store_cgroups:
                    self.stored_profiles = StoredProfiles(self.node, self.cfg.profile_hz,
                                                          self.cfg.profile_store_interval_s,
                                                          self.cfg.profile_store_cgroups, self.cfg.profile_store_stacks)
            except Exception as e:  # no perf events here: named, the rest carries on
                self.stats.inc("probe_profile_attach_failed_total")
                _log.error("CPU profiler not attached (perf_event cpu-clock at %d Hz): %s", self.cfg.profile_hz, e)
        _log.info("performance figures %s; CPU profiler %s", "on" if self.perf else "off",
                  f"{self.cfg.profile_hz} Hz" if self.profiler else "off")

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
            detach_tracepoints(self.bpf, [b"raw_syscalls:sys_enter"])
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
                self.stats.inc("probe_plan_errors_total")
                _log.warning("alerter sent a bad filter plan: %s", e)
            except (asyncio.TimeoutError, nats.errors.Error) as e:  # no alerter (yet)
                _log.debug("no filter plan from an alerter: %s", e)
            except Exception:
                self.stats.inc("probe_plan_errors_total")
                _log.exception("loading the filter plan failed")
            await asyncio.sleep(self.cfg.plan_refresh_s if got else self.cfg.plan_retry_s)

    @property
    def excluded(self) -> set[int]:
        """Pids the kernel does not trace now (services/probe/exclusion.py)."""
        return self.exclusions.pids if self.exclusions else set()

    # ---- reader thread ----------------------------------------------------------

    def _read_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # While records come the ring is polled every poll_timeout_ms (most come without a wakeup).
        # Once nothing has come for IDLE_AFTER_S (past the kernel's IDLE_GAP_MS, bpf/common.h) the
        # poll is IDLE_POLL_S long: the kernel wakes us for the next record. The polls after such a
        # wakeup start short (its burst's next records, e.g. the opens after an exec, come within
        # milliseconds) and double up to poll_timeout_ms.
        ring, timeout = self._ring, self.cfg.poll_timeout_ms / 1000
        wait, quiet_since = timeout, time.monotonic()
        try:
            while not self._reader_stop.is_set():
                drained = 0
                want = self._flows_wanted
                if want is not None:  # the flow map, behind every record committed before the snapshot
                    self._flows_wanted = None
                    try:
                        flows: object = self.flows.collect()
                    except Exception as e:  # noqa: BLE001 - raised in report_flows
                        flows = e
                    if not self.reader_paused.is_set():
                        while (n := self._drain_once(loop, ring)) == MAX_DRAIN:
                            drained += n
                        drained += n
                    loop.call_soon_threadsafe(_resolve, want, flows)  # after the hand-overs: FIFO
                if self.reader_paused.is_set():  # benchmarks fill the ring, then time its drain
                    self._reader_stop.wait(timeout)
                    continue
                drained += self._drain_once(loop, ring)
                now = time.monotonic()
                if drained:
                    wait = BURST_POLL_S if now - quiet_since > IDLE_AFTER_S else min(wait, timeout)
                    quiet_since = now
                    continue
                if now - quiet_since > IDLE_AFTER_S:
                    ring.wait(IDLE_POLL_S)
                else:
                    ring.wait(wait)
                    wait = min(wait * 2, timeout)
        except BaseException as e:  # noqa: BLE001 - reported by run()
            self._reader_error = e
            _log.exception("ring buffer reader failed")

    def _drain_once(self, loop: asyncio.AbstractEventLoop, ring: RingReader) -> int:
        """Up to MAX_DRAIN records, decoded and handed over; how many were read."""
        records = ring.drain(MAX_DRAIN)
        if records:
            events, bad = [], 0
            for rec in records:
                try:
                    events.append(self.decoder.decode(rec))
                except DecodeError as e:
                    bad += 1
                    _log.warning("dropped undecodable ring-buffer record: %s", e)
            loop.call_soon_threadsafe(self._hand_over, events, bad)
        return len(records)

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
        excluder = asyncio.create_task(self._exclusions_loop(), name="probe-exclusions")
        asker = asyncio.create_task(self._ask_plan(), name="probe-plan")
        ia32 = asyncio.create_task(self._ia32_exit_loop(), name="probe-ia32-exit")
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
            await cancel_and_wait(getter, stopper, counters, excluder, asker, ia32)
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

    async def _publish_queued(self, deadline: float) -> None:
        """On the way out: what the reader handed over goes out until `deadline`; the rest is counted."""
        while not self._queue.empty():
            events = self._queue.get_nowait()
            if time.monotonic() > deadline:
                self.stats.inc("probe_shutdown_dropped_events_total", len(events))
                continue
            await self._publish(events)

    async def _ia32_exit_loop(self) -> None:
        """Attach the ia32 exit program soon after the node's first ia32 call of interest."""
        x = self.ia32_exit
        self.stats.set("probe_ia32_exit_attached", int(bool(x and x.attached)))
        while x is not None and x.mode == "lazy" and not x.attached and not x.error:
            await asyncio.sleep(IA32_POLL_S)
            if x.poll():
                self.stats.set("probe_ia32_exit_attached", 1)

    async def _counters_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.counters_interval)
            self.read_counters()
            self.decoder.resync_clock()
            await self.report_repeats()
            await self.report_flows()
            await self.report_perf()

    async def _exclusions_loop(self) -> None:
        """Our own processes (children, units) excluded as they come, on a loop of their own: the
        counters loop waits on slower work (a profile window symbolised on a busy node, the reader's
        flow snapshot), and an exclusion held up behind it would let us trace ourselves meanwhile."""
        while True:
            await asyncio.sleep(self.cfg.counters_interval)
            self.exclusions.refresh()

    async def report_flows(self) -> None:
        """Flows that changed since the last report go out as `flow` events (deltas), in kernel order:
        after the ring's events committed before the snapshot (a connect's flow after the DNS answer
        that names it), through the queue run() publishes in order."""
        if self.flows is None:
            return
        loop = asyncio.get_running_loop()
        if self._reader is not None and self._reader.is_alive():
            want = loop.create_future()
            self._flows_wanted = want
            try:
                flows = await asyncio.wait_for(want, FLOW_SNAPSHOT_WAIT_S)
            except asyncio.TimeoutError:  # the reader is stuck or gone: read the map here
                self._flows_wanted = None
                _log.warning("the ring reader took no flow snapshot in %.0f s; reading flows directly",
                             FLOW_SNAPSHOT_WAIT_S)
                flows = await loop.run_in_executor(None, self.flows.collect)
        else:
            flows = await loop.run_in_executor(None, self.flows.collect)
        f = self.flows
        self.stats.set("probe_flows_active", f.active)
        self.stats.set("probe_flows_map_full", f.map_full)  # new flows not tracked: the map was full
        if flows:
            await self._queue.put(flows)  # waits for room: deltas are never dropped here

    async def report_perf(self) -> None:
        """Per-container figures -> eunomia.perf.<node>; profile windows drained when due."""
        loop = asyncio.get_running_loop()
        if self.profiler is not None and time.monotonic() - self._profile_drained >= self.cfg.profile_window_s:
            await self.drain_profile()
        if self.perf is None:
            return
        events = self._cg_events  # read this round by read_counters()
        figures = await loop.run_in_executor(None, self.perf.collect, events)
        self.stats.set("probe_perf_cgroups", len(figures))
        self.stats.set("probe_perf_map_full", self.perf.map_full)  # updates lost: a perf map was full
        msg = {"node": self.node, "ts": time.time_ns(), "interval_s": self.cfg.counters_interval,
               "map_full": self.perf.map_full,
               "cgroups": [{"cgroup_id": cg, "events": events.get(cg, 0), **f} for cg, f in figures.items()]}
        if self.cfg.syscall_latency:
            slow = await loop.run_in_executor(None, self.perf.syscalls)
            for row in msg["cgroups"]:
                if row["cgroup_id"] in slow:
                    row["syscalls"] = slow[row["cgroup_id"]]
        if self.profiler is not None:
            taken, lost = self.profiler.kernel_stats()
            msg["profile"] = {"hz": self.profiler.hz, "samples": taken, "lost": lost}
            self.stats.set("probe_profile_samples", taken)
            self.stats.set("probe_profile_lost_samples", lost)  # counts map full
        self.perf_latest = msg
        try:
            await self.bus.publish(subjects.perf(self.node), orjson.dumps(msg))
        except Exception as e:  # a broken connection: counted, next round carries on
            self.stats.inc("probe_perf_publish_failed_total")
            _log.error("publishing performance figures failed: %s", e)

    async def drain_profile(self):
        """The kernel's samples into a new window, also summed for the store: every
        profile_store_interval_s the busiest cgroups go out as "profile" events (through the
        publishing queue, in order with the rest)."""
        self._profile_drained = time.monotonic()
        win = await asyncio.get_running_loop().run_in_executor(None, self.profiler.drain)
        stored = self.stored_profiles
        if stored is not None:
            stored.add(win)
            events = stored.due(win.end_ns)
            self.stats.set("probe_profile_cgroups_not_stored", stored.cgroups_dropped)
            if events:
                await self._queue.put(events)
        return win

    async def profile(self, req: dict) -> dict:
        """op "profile": {"cgroup_id": int|null, "seconds": s} samples from now on for s seconds;
        {"since": ns, "until": ns} (wall clock) answers from the history instead."""
        if self.profiler is None:
            raise ControlError(UNAVAILABLE, "the CPU profiler is off here (probe.profile_hz 0, or no perf "
                                            "events: see the probe log)")
        cg = req.get("cgroup_id")
        if cg is not None and (not isinstance(cg, int) or isinstance(cg, bool) or cg <= 0):
            raise ControlError(BAD_ARGS, '"cgroup_id" must be a positive integer or null')
        if "since" in req:
            since, until = req.get("since"), req.get("until", time.time_ns())
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (since, until)):
                raise ControlError(BAD_ARGS, '"since" and "until" must be wall-clock ns')
            await self.drain_profile()
            return {"node": self.node, **self.profiler.query(cg, since, until)}
        seconds = req.get("seconds", 10)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= 600:
            raise ControlError(BAD_ARGS, '"seconds" must be a number in (0, 600]')
        start = (await self.drain_profile()).end_ns
        await asyncio.sleep(seconds)
        end = (await self.drain_profile()).end_ns
        return {"node": self.node, **self.profiler.query(cg, start, end)}

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
        cg_events = {}
        for k, v in entries(self.bpf[b"cg_counts"]):
            if k.value <= ROOT_CGROUP:
                continue
            cg_events[k.value] = sum(v.n)
            for i, cls in enumerate(CLASS_NAMES):
                if v.n[i]:
                    self.stats.set("probe_cgroup_events", v.n[i], cgroup_id=k.value, **{"class": cls})
        self._cg_events = cg_events
        self._prune_cgroups()
        if syscall_profile is not None and self.plan.has("syscalls.bpf.c"):
            syscall_profile.export(self.bpf, self.stats)

    def _prune_cgroups(self) -> None:
        """Forget counters of cgroups gone for a while (map and gauge series stay bounded)."""
        table = self.bpf[b"cg_counts"]
        series = self.stats.gauges.get("probe_cgroup_events", {})
        perf = self.perf

        def tracked() -> set[int]:
            ids = {k.value for k in table.keys()}
            return ids | {k.value for k in perf.cgs.keys()} if perf is not None else ids
        gone = self._gone_cgroups.expired(tracked)
        for cg in gone:
            try:
                del table[table.Key(cg)]
            except KeyError:
                pass
            for key in [key for key in series if ("cgroup_id", str(cg)) in key]:
                del series[key]
        if gone and perf is not None:
            perf.forget(set(gone))

    # ---- bus handlers -------------------------------------------------------------

    async def _on_plan_broadcast(self, msg) -> None:
        """`eunomia.ctl.probes` reaches every node: only the plan is taken from it."""
        try:
            req = orjson.loads(msg.data)
            if not isinstance(req, dict) or req.get("op") != "plan":
                raise PlanError(f"only op 'plan' is taken on {msg.subject}")
            self.load_plan(FilterPlan.from_dict(req.get("plan")))
        except (orjson.JSONDecodeError, PlanError) as e:
            self.ctl.refuse(BAD_REQUEST, f"{msg.subject}: {e}")

    def _control(self) -> Control:
        c = Control("probe", self.stats)
        c.op("status", self._op_status)
        c.op("plan", self._op_plan)
        c.op("syscalls", self._op_syscalls)
        c.op("syscalls_reset", self._op_syscalls)
        return c

    def _perf_control(self) -> Control:
        """Read-only performance ops on their own subject (subjects.ctl_perf), which the api may use."""
        c = Control("probe", self.stats)
        c.op("perf", self._op_perf)
        c.op("profile", self.profile, background=True)  # takes seconds: answered from its own task
        return c

    def _op_perf(self, req: dict) -> dict:
        if not self.perf_latest:
            raise ControlError(UNAVAILABLE, "no performance figures yet (probe.perf off, or before the first "
                                            "counters interval)")
        return self.perf_latest

    async def control(self, data: bytes) -> dict:
        """One control request (JSON object with "op") -> reply dict (shared/control.py)."""
        return await self.ctl.handle(data)

    def _op_status(self, req: dict) -> dict:
        self.read_counters()
        return {"node": self.node, "pid": os.getpid(), "files": [p.name for p in self.plan.files],
                "dropped_files": self.plan.dropped, "missing_tracepoints": self.plan.missing,
                "errors": self.plan.errors, "tracepoints": self.bpf.num_open_tracepoints(),
                "kinds": list(self.cfg.kinds), "excluded_pids": sorted(self.excluded),
                "capture": self.cfg.capture, "plan": self.plan_maps.summary(),
                "dns": (self.dns.error or "attached") if self.dns is not None else "not loaded",
                "counters": self.stats.snapshot(self.node)["counters"]}

    def _op_plan(self, req: dict) -> dict:
        try:
            return {"loaded": self.load_plan(FilterPlan.from_dict(req.get("plan")))}
        except PlanError as e:
            raise ControlError(BAD_ARGS, str(e)) from None

    def _op_syscalls(self, req: dict) -> dict:
        cg = req.get("cgroup_id")
        if not isinstance(cg, int) or cg <= 0:
            raise ControlError(BAD_ARGS, '"cgroup_id" must be a positive integer')
        if syscall_profile is None or not self.plan.has("syscalls.bpf.c"):
            raise ControlError(UNAVAILABLE, "syscall profiles are not available (services/probe/syscall_profile.py "
                                            "and bpf/syscalls.bpf.c)")
        if not self.cfg.syscall_profiles:
            raise ControlError(UNAVAILABLE, "syscall profiles are off: run the probe with syscall_profiles "
                                            "(`eunomia up --syscall-profiles`, `eunomia probe --syscall-profiles`)")
        try:
            if req["op"] == "syscalls":
                return {"cgroup_id": cg, "syscalls": syscall_profile.dump(self.bpf, cg)}
            return {"cgroup_id": cg, "reset": syscall_profile.reset(self.bpf, cg)}
        except KeyError as e:
            raise ControlError(UNAVAILABLE, f"syscall profile maps are not loaded: {e}") from None
