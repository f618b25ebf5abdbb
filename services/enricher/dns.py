"""DNS events: parse the probe's payload, pair answers with queries, learn names.

The probe (bpf/dns.bpf.c) sends each DNS message a container's socket sent
to or received from port 53 as base64 `payload`. Here it becomes the fields
of shared/schema.py DNS_FIELDS (the payload is dropped). An answer is paired
with its query by (cgroup, local port, resolver, transaction id): it gets the
query's latency and, since answers arrive in softirq context without a
process, the query's pid and process. A+AAAA answers teach the container's
NameMap which name an address came from. Queries get `resolver_configured`:
whether the server is one of the container's /etc/resolv.conf nameservers
(read through /proc/<pid>/root, cached per container).

Messages that do not parse are kept as events with `malformed` = the reason
(a broken packet to port 53 is itself worth seeing) and counted.
"""
from __future__ import annotations

import base64
import binascii
from collections import OrderedDict

from shared.bounded import Bounded
from shared.stats import Stats

from .dnsparse import DnsError, parse
from .names import NameMap

HEAD_COPY = ("pid", "tid", "ppid", "uid", "gid", "comm")
RESOLV_TTL_NS = 30_000_000_000
MAX_RESOLV = 1024   # containers whose resolv.conf nameservers are kept


def resolv_nameservers(pid: int) -> frozenset[str] | None:
    """Nameservers of the process's /etc/resolv.conf (as its mount namespace sees it); None if unreadable."""
    try:
        with open(f"/proc/{pid}/root/etc/resolv.conf", "rb") as f:
            text = f.read(65536).decode("utf-8", "replace")
    except OSError:
        return None
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.add(parts[1].split("%")[0])
    return frozenset(out)


class DnsTracker:
    def __init__(self, stats: Stats, names: NameMap, max_pending: int = 4096, pending_ttl_s: float = 30.0) -> None:
        self.stats, self.names = stats, names
        self.max_pending = max_pending
        self.pending_ttl_ns = int(pending_ttl_s * 1e9)
        self._pending: OrderedDict[tuple, dict] = OrderedDict()
        self._resolv: Bounded[str, tuple[frozenset[str] | None, int]] = Bounded(MAX_RESOLV)

    def on_event(self, ev: dict, scope: str) -> None:
        """Fill a dns event in place (before the process view: answers take the query's pid).
        resolv.conf is read through the querying process or, when it is already gone, its parent."""
        raw = ev.pop("payload", None)
        ev.update(txid=None, qname=None, qtype=None, rcode=None, answers=[], ttl=None, latency_ns=None,
                  malformed=None, resolver_configured=None)
        direction = ev.get("direction")
        self.stats.inc("enricher_dns_messages_total", direction=direction if direction in ("query", "answer")
                       else "other")
        try:
            buf = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
        except (binascii.Error, ValueError):
            buf = b""
        try:
            msg = parse(buf, tcp=ev.get("proto") == "tcp", complete=not ev.get("truncated"))
        except DnsError as e:
            ev["malformed"] = str(e)
            self.stats.inc("enricher_dns_malformed_total", reason=str(e))
            return
        ev.update(txid=msg.txid, qname=msg.qname, qtype=msg.qtype)
        key = (ev.get("cgroup_id"), ev.get("sport"), ev.get("daddr"), msg.txid)
        ts = ev["ts"]
        if not msg.response:
            if direction == "query":
                self._remember(key, ev)
                ev["resolver_configured"] = self._configured(scope, (ev.get("pid"), ev.get("ppid")), ev.get("daddr"),
                                                             ts)
            return
        ev["rcode"] = msg.rcode
        ev["answers"] = [r.data for r in msg.answers if r.data is not None]
        ttls = [r.ttl for r in msg.answers]
        ev["ttl"] = min(ttls) if ttls else None
        q = self._pending.pop(key, None)
        if q is not None:
            ev["latency_ns"] = max(0, ts - q["ts"])
            if not ev.get("pid"):
                for k in HEAD_COPY:
                    ev[k] = q.get(k)
        else:
            self.stats.inc("enricher_dns_unpaired_answers_total")
        if msg.rcode == "NOERROR" and msg.qname:
            for r in msg.answers:
                if r.type in ("A", "AAAA") and r.data:
                    self.names.learn(scope, r.data, msg.qname, r.ttl, ts)

    def _remember(self, key: tuple, ev: dict) -> None:
        pending = self._pending
        pending.pop(key, None)
        pending[key] = {"ts": ev["ts"], **{k: ev.get(k) for k in HEAD_COPY}}
        now = ev["ts"]
        while pending:
            old_key, old = next(iter(pending.items()))
            if len(pending) <= self.max_pending and now - old["ts"] < self.pending_ttl_ns:
                break
            del pending[old_key]
            self.stats.inc("enricher_dns_unanswered_total")

    def _configured(self, scope: str, pids: tuple, server: object, ts: int) -> bool | None:
        if not isinstance(server, str):
            return None
        cached = self._resolv.get(scope)
        if cached is None or ts - cached[1] > RESOLV_TTL_NS or cached[0] is None:
            servers = None
            for pid in pids:
                if isinstance(pid, int) and pid > 0 and servers is None:
                    servers = resolv_nameservers(pid)
            cached = (servers, ts)
            self._resolv[scope] = cached
        return None if cached[0] is None else server in cached[0]
