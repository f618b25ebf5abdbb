"""The alerter: enriched events in, rules evaluated, alerts out to sinks.

Subscribes `eunomia.event.>` in a queue group (replicas share the load),
remembers sequence facts (state.py), evaluates the ruleset, throttles
repeats (throttle.py) and hands alerts to its sinks (NATS always; stdout,
file, webhooks by config), each behind its own bounded queue.

Reload: request `eunomia.ctl.alerter` {"op": "reload"} or change a rule
file (mtime poll). A broken file keeps the old rules; the RuleError
(file:line:col: reason) goes to the log, the reply and the stats.

Filter plan: every ruleset installed is compiled into the kernel's filter
plan (engine/plan.py) and sent to every probe on `eunomia.ctl.probes`;
{"op": "plan"} answers it to a probe that starts later.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import orjson

from shared import bus as busmod
from shared import busauth, log, subjects
from shared.config import CommonConfig, ConfigError
from shared.control import Control
from shared.schema import KINDS, new_event_id
from shared.stats import Stats, StatsPublisher
from shared.tasks import cancel_and_wait

from .config import AlerterConfig
from .engine import RuleError, Ruleset, load_rules, priority_rank
from .sinks import FileSink, NatsSink, Sink, StdoutSink, WebhookSink
from .state import STATE_KINDS, ExecState
from .throttle import Summary, Throttle, key_of

_log = log.get("alerter")


def _signature(files: list[Path]) -> tuple:
    sig = []
    for f in files:
        try:
            st = f.stat()
            sig.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((str(f), None, None))
    return tuple(sig)


class AlerterService:
    name = "alerter"

    def __init__(self, cfg: AlerterConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.stats = Stats("alerter")
        self.ruleset: Ruleset | None = None
        self.plan = None                        # shared.filterplan.FilterPlan of the ruleset
        self.skipped_kinds: frozenset[str] = frozenset()  # kinds no rule or state reads: not even decoded
        self.throttle = Throttle(cfg.throttle_window_s, cfg.throttle_max_repeats, cfg.throttle_max_keys,
                                 cfg.throttle_keys_per_container)
        self.state = ExecState(cfg.state_table_size, cfg.state_containers)
        self._state_evictions_seen: dict[str, int] = {}
        self.sinks: list[Sink] = []
        self.bus: busmod.Bus | None = None
        self.last_reload_error: str | None = None
        self._min_rank = priority_rank(cfg.min_priority)
        self._sig: tuple = ()
        self._failed_sig: tuple | None = None
        self._eval_errors_seen = 0
        self._stack = AsyncExitStack()
        self._reload_lock = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> "AlerterService":
        files = self.cfg.files()
        self._sig = _signature(files)
        try:
            self._install(await asyncio.to_thread(load_rules, files))
        except RuleError as e:
            raise ConfigError(f"rules: {e}") from None
        try:
            st = self._stack
            self.bus = await st.enter_async_context(busmod.connect(
                self.common.servers, self.stats, "alerter",
                cred=busauth.for_role(self.common.data_dir, "alerter", self.common.node)))
            q = self.cfg.sink_queue
            sinks: list[Sink] = [NatsSink(self.bus, self.stats, q)]
            if self.cfg.stdout:
                sinks.append(StdoutSink(self.stats, q))
            if self.cfg.file:
                sinks.append(FileSink(self.cfg.file, self.stats, q))
            for url in self.cfg.webhooks:
                sinks.append(WebhookSink(url, self.stats, q, self.cfg.webhook_retries,
                                         self.cfg.webhook_backoff_s, self.cfg.webhook_timeout_s))
            for s in sinks:
                self.sinks.append(await st.enter_async_context(s))
            await self._control().serve(self.bus, subjects.CTL_ALERTER)
            for subject, queue in self.cfg.subscriptions():  # queue group, or owned partitions
                await self.bus.subscribe_batches(subject, self._on_events, queue=queue, skip=self._skipped)
            await self.bus.nc.flush()
            # the first heartbeat says "subscribed": tests and operators wait for it
            await st.enter_async_context(StatsPublisher(self.bus, self.stats, self.common.node,
                                                        self.common.stats_interval))
            await self._send_plan()
        except BaseException:
            await self._stack.aclose()
            raise
        _log.info("alerter: %d rules from %d files, queue group %r", len(self.ruleset.rules), len(files),
                  self.cfg.queue_group)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.bus:  # summarize what was suppressed; the stack then drains the sinks
            self._emit_summaries(self.throttle.summaries(float("inf")))
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._supervised("summaries", self._summary_loop), name="alerter-summaries")]
        if self.cfg.reload_check_s > 0:
            tasks.append(asyncio.create_task(self._supervised("rules-watch", self._watch_loop),
                                             name="alerter-rules-watch"))
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(*tasks)

    # --- rules -------------------------------------------------------------

    def _install(self, rs: Ruleset) -> None:
        self.ruleset = rs
        # rules below min_priority never alert: the kernel need not emit for them
        self.plan = rs.filter_plan(f"alerter {self.common.node}", max_rank=self._min_rank)
        matched = rs.kinds_matched()
        self.skipped_kinds = frozenset() if matched is None else frozenset(KINDS) - matched - STATE_KINDS
        self._eval_errors_seen = rs.eval_errors
        self.stats.set("rules_loaded", sum(r.enabled for r in rs.rules))
        for w in rs.warnings:
            _log.warning("rules: %s", w)

    async def reload(self) -> dict:
        """Load the rule files again; on error keep the old rules."""
        async with self._reload_lock:
            files = self.cfg.files()
            sig = _signature(files)
            try:
                rs = await asyncio.to_thread(load_rules, files)
            except Exception as e:  # noqa: BLE001 - whatever a file does, the old rules stay
                if not isinstance(e, RuleError):
                    _log.exception("rules reload: unexpected failure")
                    e = RuleError(str(files[0]) if files else "<rules>", 1, 1,
                                  f"cannot load rules: {type(e).__name__}: {e}")
                self._sig = self._failed_sig = sig
                self.last_reload_error = str(e)
                where = f"{e.file}:{e.line}:{e.column}"
                self.stats.inc("rule_reload_errors_total", where=where)
                self.stats.set("rule_reload_failed", 1)
                _log.error("rules reload failed, keeping %d old rules: %s", len(self.ruleset.rules), e)
                return {"ok": False, "error": str(e), "errors": [str(x) for x in e.errors],
                        "rules": len(self.ruleset.rules), "node": self.common.node}
            self._install(rs)
            await self._send_plan()
            self._sig, self._failed_sig, self.last_reload_error = sig, None, None
            self.stats.inc("rule_reloads_total")
            self.stats.set("rule_reload_failed", 0)
            _log.info("rules reloaded: %d rules from %d files", len(rs.rules), len(files))
            return {"ok": True, "rules": len(rs.rules), "files": [str(f) for f in files], "node": self.common.node}

    async def _send_plan(self) -> None:
        """Every probe loads the plan of the rules now installed."""
        try:
            await self.bus.publish(subjects.CTL_PROBES, orjson.dumps({"op": "plan", "plan": self.plan.to_dict()}))
            self.stats.inc("plan_published_total")
        except Exception as e:  # the probes ask again (op "plan") when they (re)start
            _log.warning("could not publish the filter plan: %s", e)

    async def _supervised(self, name: str, loop) -> None:
        """Run `loop` forever: if it fails it is logged, counted
        (alerter_task_restarts_total{task}) and started again after a pause."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a background loop must never die silently
                _log.exception("%s failed; restarting it", name)
                self.stats.inc("alerter_task_restarts_total", task=name)
                await asyncio.sleep(min(1.0, self.cfg.reload_check_s or 1.0))

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reload_check_s)
            self.stats.inc("rule_watch_checks_total")
            try:
                sig = await asyncio.to_thread(lambda: _signature(self.cfg.files()))
            except OSError as e:
                _log.warning("rules watch: %s", e)
                self.stats.inc("rule_watch_errors_total")
                continue
            if sig != self._sig and sig != self._failed_sig:
                _log.info("rule files changed; reloading")
                await self.reload()

    def _control(self) -> Control:
        c = Control("alerter", self.stats)
        c.op("reload", lambda req: self.reload())
        c.op("plan", lambda req: {"ok": True, "plan": self.plan.to_dict()})
        c.op("status", self._op_status)
        return c

    def _op_status(self, req: dict) -> dict:
        return {"ok": True, "node": self.common.node, "rules": self.ruleset.summary(),
                "files": [str(f) for f in self.cfg.files()], "last_reload_error": self.last_reload_error,
                "throttle_keys": len(self.throttle)}

    # --- the hot path ------------------------------------------------------

    def _skipped(self, subject: str) -> bool:
        """A batch on eunomia.event.<node>.<kind> (or a partition's subject, also ending in the kind)
        of a kind no rule can match (fork and exit, with the default rules)."""
        return subject[subject.rfind(".") + 1:] in self.skipped_kinds

    async def _on_events(self, subject: str, events: list[dict]) -> None:
        rs, now = self.ruleset, time.monotonic()
        state = self.state
        for ev in events:
            ev = state.annotate(ev)
            hits = [(ev, m) for m in rs.evaluate(ev)]
            if ev.get("kind") == "exec":
                state.remember_exec(ev, {m.rule for _, m in hits})
            else:
                for late_ev, seen in state.late(ev):  # an exec whose cause arrived after it
                    hits += [(late_ev, m) for m in rs.evaluate(late_ev) if m.rule not in seen]
            for ev, m in hits:
                if priority_rank(m.priority) > self._min_rank:
                    continue
                alert = self._alert(ev, m)
                self.stats.inc("alerts_total", rule=m.rule, priority=m.priority)
                why = self.throttle.admit(key_of(m.rule, ev), alert, now)
                if why is None:
                    self._offer(alert)
                else:
                    self.stats.inc("alerts_suppressed_total", rule=m.rule, reason=why)
        self.stats.inc("events_evaluated_total", len(events))
        self.stats.set("alerter_throttle_keys", len(self.throttle))
        if self.throttle.evictions:
            self.stats.inc("alerter_throttle_evictions_total", self.throttle.evictions)
            self.throttle.evictions = 0
        if state.evictions != self._state_evictions_seen:
            for table, n in state.evictions.items():
                d = n - self._state_evictions_seen.get(table, 0)
                if d:
                    self.stats.inc("alerter_state_evictions_total", d, table=table)
            self._state_evictions_seen = dict(state.evictions)
        if rs.eval_errors != self._eval_errors_seen:
            self.stats.inc("rule_errors_total", rs.eval_errors - self._eval_errors_seen)
            _log.warning("rule evaluation errors: %s", rs.last_eval_error)
            self._eval_errors_seen = rs.eval_errors

    def _alert(self, ev: dict, m) -> dict:
        return {"id": new_event_id(self.common.node), "ts": time.time_ns(), "node": ev.get("node"),
                "kind": "alert", "pid": ev.get("pid"), "rule": m.rule, "priority": m.priority,
                "output": m.output, "tags": list(m.tags), "fields": m.fields, "event": ev,
                "container": ev.get("container"), "k8s": ev.get("k8s"),
                # the kernel's dedup: how many more times the same event happened in its window
                "repeat": ev.get("repeat", 0)}

    def _offer(self, alert: dict) -> None:
        for s in self.sinks:
            s.offer(alert)

    # --- throttle summaries ------------------------------------------------

    async def _summary_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.summary_interval_s)
            self._emit_summaries(self.throttle.summaries(time.monotonic()))
            self.state.expire()

    def _emit_summaries(self, summaries: list[Summary]) -> None:
        for s in summaries:
            last = s.last
            what = "alert(s) past the container's throttle key cap" if s.overflow else "repeated alert(s)"
            alert = {**last, "id": new_event_id(self.common.node), "ts": time.time_ns(),
                     "output": f"{s.count} {what} suppressed, the last: {s.output}" if s.overflow else
                     f"{s.count} {what} suppressed: {s.output}",
                     "tags": [*last.get("tags", []), "throttled"], "suppressed": s.count}
            _log.info("throttle: rule %r container %s: %d %s suppressed", s.rule, s.container, s.count, what)
            self.stats.inc("alert_summaries_total", rule=s.rule)
            self._offer(alert)
