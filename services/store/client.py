"""Query client for the store: THE contract the API and CLI use.

Every call is a NATS request to `eunomia.store.<op>` with a JSON object of
parameters; the store replies {"result": ...} or {"error": "<what is wrong>"}
(plus "unavailable": true when the store itself failed, e.g. database down).
StoreQueryError -> HTTP 400; StoreUnavailable (no store answered, or it failed) -> HTTP 503.

    client = StoreClient(bus)
    page = await client.events(kind="exec", container="web", limit=50)
    page2 = await client.events(kind="exec", container="web", limit=50, cursor=page["next_cursor"])

Filters (all optional):
  events:  kind, container (id prefix or name), node, pid, namespace, pod (k8s), since, until (ns),
           q (words, case-insensitive, all must occur in the path, command line, comm, exe, container
              name or an address; parts of dotted words are words too; `word*` matches as a prefix),
           limit (1..1000, default 100), cursor (next_cursor of the previous page)
Replies larger than the bus's max payload arrive in chunks (joined by this client).
  alerts:  rule, priority (minimum, e.g. "warning"), container, node, since, until, q, limit, cursor
"""
from __future__ import annotations

from typing import Any

import nats.errors
import orjson

from shared import subjects

CHUNK_HEADER = "Eunomia-Chunk"     # services/store/service.py


class StoreQueryError(Exception):
    """The store refused the query; str(e) says which parameter and why (HTTP 400)."""


class StoreUnavailable(Exception):
    """No store answered in time, or it failed on its side (HTTP 503)."""


class StoreClient:
    def __init__(self, bus, timeout: float = 5.0) -> None:
        self.bus, self.timeout = bus, timeout

    async def _ask(self, op: str, params: dict[str, Any]) -> Any:
        body = {k: v for k, v in params.items() if v is not None}
        data = await self._request(op, orjson.dumps(body))
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise StoreUnavailable(f"store sent a non-JSON reply to {op}") from None
        if not isinstance(reply, dict):
            raise StoreUnavailable(f"store sent a malformed reply to {op}")
        if "error" in reply:
            if reply.get("unavailable"):      # the store's fault (e.g. database down), not the query's
                raise StoreUnavailable(str(reply["error"]))
            raise StoreQueryError(str(reply["error"]))
        return reply.get("result")

    async def _request(self, op: str, body: bytes) -> bytes:
        """The reply's bytes; a large reply comes in chunks (header Eunomia-Chunk: "<i>/<n>"), joined here."""
        nc = self.bus.nc
        sub = await nc.subscribe(nc.new_inbox())
        try:
            await nc.publish(subjects.store(op), body, reply=sub.subject)
            parts: list[bytes] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.timeout)
                except nats.errors.TimeoutError:
                    raise StoreUnavailable(f"store did not answer {op}: TimeoutError") from None
                headers = msg.headers or {}
                if headers.get("Status") == "503":
                    raise StoreUnavailable(f"store did not answer {op}: NoRespondersError")
                chunk = headers.get(CHUNK_HEADER)
                parts.append(msg.data)
                if chunk is None:
                    return msg.data
                i, _, n = chunk.partition("/")
                if not (i.isdigit() and n.isdigit() and int(i) == len(parts)):
                    raise StoreUnavailable(f"store sent chunk {chunk!r} of {op} out of order")
                if int(i) == int(n):
                    return b"".join(parts)
        finally:
            await sub.unsubscribe()

    async def events(self, **filters: Any) -> dict:
        """{"items": [event, ...] newest first, "next_cursor": str | None}"""
        return await self._ask("events", filters)

    async def alerts(self, **filters: Any) -> dict:
        """{"items": [alert, ...] newest first, "next_cursor": str | None}"""
        return await self._ask("alerts", filters)

    async def containers(self) -> list[dict]:
        """[{"id","name","image","runtime","node","cgroup_id","labels","first_seen","last_seen","events"}]"""
        return await self._ask("containers", {})

    async def process_tree(self, container: str | None = None, pid: int | None = None,
                           node: str | None = None) -> list[dict]:
        """Roots, each {"pid","ppid","exe","args","comm","container_id","node","exited","children":[...]}"""
        return await self._ask("process_tree", {"container": container, "pid": pid, "node": node})

    async def network_graph(self, since: int | None = None) -> dict:
        """{"nodes": [{"id","label","kind"}], "edges": [{"source","target","port","proto","count","last_seen"}]}
        node kinds: "container", "host", "external"."""
        return await self._ask("network_graph", {"since": since})

    async def stats(self) -> dict:
        """{"backend", "events", "alerts", "containers", "connections", "processes", "db_bytes",
            "pending": {"EVENTS": n, "ALERTS": n}, "counters": {...}}"""
        return await self._ask("stats", {})
