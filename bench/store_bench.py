"""Store size and speed at scale: today's schema against schema version 1 (the baseline) in the same run.

    python -m bench.store_bench                   # 1M events, SQLite and PostgreSQL
    python -m bench.store_bench --events 10000000 # the 10M run (hours on a small machine)
    python -m bench.store_bench --backends sqlite --no-baseline
    python -m bench.store_bench --backends sqlite --no-baseline --keep /var/tmp/sb   # ingest once, query again later

For each backend: ingest a realistic event mix (bench/eventmix.py; one alert
per 100 events) spread over 7 days, then print bytes/event, ingest events/s
and p50/p95 of each query the API makes. Writes go through the backends'
write() (with the derived tables), queries through their query methods plus
the JSON encoding of the reply, as the store service does.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.eventmix import EventMix
from bench.store_v1 import PostgresV1, SqliteV1
from services.store.backend import open_backend
from services.store.config import StoreConfig
from services.store.pg_backend import PostgresBackend
from services.store.pg_partitions import SPANS
from services.store.service import RETAIN_EARLY

SPAN_NS = 7 * 24 * 3600 * 10**9
BATCH = 2000
HOUR = 3600 * 10**9


def batches(n: int, seed: int, end_ts: int):
    mix = EventMix(seed=seed)
    step = SPAN_NS // n
    start = end_ts - SPAN_NS
    for i in range(0, n, BATCH):
        evs = [mix.event(start + (i + j) * step + mix.r.randrange(step)) for j in range(min(BATCH, n - i))]
        yield evs, [mix.alert(e) for e in evs[::100]]


def queries(mix: EventMix, end_ts: int, new: bool):
    """(name, runs, params-maker, method) of each API query."""
    conts = [c for c, *_ in mix.containers]
    pids = [p for *_, pids, _ in mix.containers for p in pids]

    def window(r: random.Random) -> dict:
        since = end_ts - SPAN_NS + r.randrange(SPAN_NS - HOUR)
        return {"since": since, "until": since + HOUR}
    words = ["passwd", "ld.so.cache", "nginx", "curl healthz", "appendonly", "node_exporter", "coredns", "preload"]
    prefixes = ["10.0.3*", "passw*", "ngin*", "append*"]
    out = [
        ("events newest", 20, lambda r: {}, "events"),
        ("events container+1h", 20, lambda r: {"container": r.choice(conts)["name"], **window(r)}, "events"),
        ("events container id", 20, lambda r: {"container": r.choice(conts)["id"][:12]}, "events"),
        ("events kind+1h", 20, lambda r: {"kind": r.choice(["exec", "connect", "unlink", "mount"]), **window(r)},
         "events"),
        ("events pid", 20, lambda r: {"pid": r.choice(pids)}, "events"),
        ("events q", 20 if new else 3, lambda r: {"q": r.choice(words)}, "events"),
        ("events q prefix*", 10 if new else 3, lambda r: {"q": r.choice(prefixes)}, "events"),
        ("events q+container", 20 if new else 3, lambda r: {"q": r.choice(words), "container": r.choice(conts)["name"]},
         "events"),
        ("events limit=1000", 10, lambda r: {"limit": 1000, "container": r.choice(conts)["name"]}, "events"),
        ("alerts rule+1h", 20, lambda r: {"rule": "Shell in container", **window(r)}, "alerts"),
        ("alerts priority", 20, lambda r: {"priority": "error"}, "alerts"),
    ]
    if new:
        out += [("process tree", 10, lambda r: {"container": r.choice(conts)["name"]}, "process_tree"),
                ("network graph 1h", 10, lambda r: {"since": end_ts - HOUR}, "network_graph")]
    return out


async def ingest(store, n: int, seed: int, end_ts: int, new: bool) -> dict:
    t_write = 0.0
    for evs, als in batches(n, seed, end_ts):
        t = time.perf_counter()
        await store.write(evs, als)
        t_write += time.perf_counter() - t
    size = (await store.counts())["db_bytes"] if new else await store.db_bytes()
    return {"bytes_per_event": size / n, "ingest_eps": n / t_write, "db_bytes": size, "end_ts": end_ts}


async def measure(store, n: int, seed: int, end_ts: int, new: bool, kept: Path | None = None) -> dict:
    """Ingest (unless `kept` names a marker of an ingest already done into this store), then query."""
    if kept is not None and kept.exists():
        res = orjson.loads(kept.read_bytes())
        print(f"  reusing the {n:,} events ingested earlier ({kept})", flush=True)
    else:
        res = await ingest(store, n, seed, end_ts, new)
        if kept is not None:
            kept.write_bytes(orjson.dumps(res))
    res["q"] = {}
    end_ts = res["end_ts"]
    r = random.Random(seed)
    for name, runs, params, method in queries(EventMix(seed=seed), end_ts, new):
        lat = []
        for _ in range(runs):
            t = time.perf_counter()
            out = await getattr(store, method)(params(r))
            orjson.dumps({"result": out})
            lat.append(time.perf_counter() - t)
        lat.sort()
        res["q"][name] = (statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))])
    return res


async def bench_backend(kind: str, n: int, seed: int, baseline: bool, pg_url: str | None, tmp: Path,
                        keep: Path | None = None) -> dict:
    end_ts = time.time_ns()
    out = {}
    pg = None
    try:
        if kind == "postgresql" and pg_url is None:
            from tests.pg import PgServer
            pg = PgServer().start()
        for label in (("new", "v1") if baseline else ("new",)):
            where = pg_url if kind == "postgresql" else "sqlite"
            tag = f"{label}-{n}-s{seed}-{hashlib.sha1(str(where).encode()).hexdigest()[:8]}"
            kept = keep / f"{tag}.done" if keep is not None and (kind == "sqlite" or pg_url) else None
            if kind == "sqlite":
                path = (keep if kept else tmp) / f"{tag if kept else label}.db"
                if kept and not kept.exists():      # an ingest cut short: start again
                    for f in path.parent.glob(path.name + "*"):
                        f.unlink()
                store = open_backend(f"sqlite:///{path}") if label == "new" else SqliteV1(str(path))
            else:
                url = await pg.new_database() if pg else pg_url
                # day partitions: the span retention gives a store whose size cap holds a week at this rate
                # (the bench runs no retention while it ingests: sized by the default cap, they would be hours)
                store = PostgresBackend(url, partition_ns=SPANS[-1]) if label == "new" else \
                    await PostgresV1(url).open()
            if label == "new":
                await store.open()
                if not (kept and kept.exists()):     # (kept: 10M rows are over the default row cap)
                    await store.retain(0, StoreConfig.max_rows, StoreConfig.max_bytes)   # as the service at start
            try:
                t = time.perf_counter()
                out[label] = await measure(store, n, seed, end_ts, label == "new", kept)
                print(f"  {kind} {label}: {time.perf_counter() - t:.0f} s", flush=True)
            finally:
                await store.close()
    finally:
        if pg:
            pg.stop()
    return out


async def retention_under_load(kind: str, n: int, cap: int, seed: int, pg_url: str | None, tmp: Path) -> None:
    """Ingest n events into a store capped at `cap` bytes, retention running every 20 batches alongside the
    writes (as the service does): the size after each retention pass and how long writes waited."""
    pg = None
    if kind == "postgresql" and pg_url is None:
        from tests.pg import PgServer
        pg = PgServer().start()
    try:
        store = open_backend(f"sqlite:///{tmp / 'retain.db'}" if kind == "sqlite"
                             else (await pg.new_database() if pg else pg_url))
        await store.open()
        await store.retain(0, 10**12, cap)          # as the service does at start
        lat, sizes, retains = [], [], []
        task = None

        async def retain() -> None:
            t = time.perf_counter()
            await store.retain(0, 10**12, cap)
            retains.append(time.perf_counter() - t)
            sizes.append((await store.counts())["db_bytes"])
        seen = []      # the size after each write (SQLite)
        for i, (evs, als) in enumerate(batches(n, seed, time.time_ns())):
            t = time.perf_counter()
            res = await store.write(evs, als)
            lat.append(time.perf_counter() - t)
            if res.db_bytes is not None:
                seen.append(res.db_bytes)
            # as the service: every so often, at once when a write finds the file near its cap, and
            # before the next write when over it
            near = res.db_bytes is not None and res.db_bytes > cap * RETAIN_EARLY
            if res.db_bytes is not None and res.db_bytes > cap:
                if task is not None:
                    await task
                task = asyncio.create_task(retain())
                await task
            elif (i % 20 == 19 or near) and (task is None or task.done()):
                task = asyncio.create_task(retain())
        if task:
            await task
        await store.close()
        lat.sort()
        print(f"\n== {kind}: retention under load, {n:,} events, cap {cap / 2**20:.0f} MiB ==")
        print(f"  size after each pass: max {max(sizes) / 2**20:.1f} MiB, last {sizes[-1] / 2**20:.1f} MiB "
              f"({len(sizes)} passes, longest {max(retains):.2f} s)")
        if seen:
            print(f"  size after each write: max {max(seen) / 2**20:.1f} MiB, "
                  f"over the cap after {sum(b > cap for b in seen)} of {len(seen)} writes")
        print(f"  write of {BATCH} events (with waits for retention over the cap): p50 {lat[len(lat) // 2] * 1e3:.0f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.0f} ms, max {lat[-1] * 1e3:.0f} ms")
    finally:
        if pg:
            pg.stop()


def report(kind: str, n: int, res: dict) -> None:
    new, old = res["new"], res.get("v1")
    print(f"\n== {kind}, {n:,} events ==")

    def ratio(a: float, b: float | None) -> str:
        return f"{b / a:7.1f}x" if b else "      -"
    print(f"{'':24} {'today':>14} {'v1 (baseline)':>16} {'better by':>10}")
    print(f"{'bytes/event':24} {new['bytes_per_event']:14.0f} "
          f"{old['bytes_per_event'] if old else float('nan'):16.0f} {ratio(new['bytes_per_event'], old and old['bytes_per_event'])}")
    print(f"{'ingest events/s':24} {new['ingest_eps']:14.0f} {old['ingest_eps'] if old else float('nan'):16.0f} "
          f"{ratio(old['ingest_eps'], new['ingest_eps']) if old else '      -'}")
    print(f"{'query p50 / p95 (ms)':24}")
    for name, (p50, p95) in new["q"].items():
        o = old["q"].get(name) if old else None
        os_ = f"{o[0] * 1e3:7.1f} /{o[1] * 1e3:7.1f}" if o else f"{'n/a':>16}"
        print(f"  {name:22} {p50 * 1e3:6.1f} /{p95 * 1e3:6.1f} {os_} {ratio(p95, o and o[1])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--no-baseline", action="store_true", help="skip schema version 1")
    ap.add_argument("--pg-url", help="an empty PostgreSQL database (default: start a throwaway server)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--retention-events", type=int, default=200_000,
                    help="events for the retention-under-load run (0: skip it)")
    ap.add_argument("--retention-cap-mib", type=int, default=16, help="the size cap of that run")
    ap.add_argument("--only-retention", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the SQLite files (and a --pg-url database) in this folder and, "
                    "when run again with the same events, seed and backend, query them without ingesting")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # unwind: stop the PostgreSQL server, remove files
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for kind in a.backends.split(","):
            if not a.only_retention:
                if a.keep:
                    a.keep.mkdir(parents=True, exist_ok=True)
                res = asyncio.run(bench_backend(kind, a.events, a.seed, not a.no_baseline, a.pg_url, Path(tmp), a.keep))
                report(kind, a.events, res)
            if a.retention_events:
                asyncio.run(retention_under_load(kind, a.retention_events, a.retention_cap_mib * 2**20, a.seed, a.pg_url,
                                                Path(tmp)))


if __name__ == "__main__":
    main()
