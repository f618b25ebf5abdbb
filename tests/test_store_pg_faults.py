"""PostgreSQL refusing writes for reasons that are not the data's fault (disk full, read-only,
an administrator's shutdown of the session) is retried until it takes them: nothing is
terminated or lost. Real PostgreSQL; the disk-full error is raised by a trigger with the
server's own SQLSTATE (53100), since filling this machine's disk is not an option."""
from __future__ import annotations

import time

import asyncpg
import pytest

from services.store.pg_backend import PostgresBackend
from shared import subjects
from tests.test_store import all_pages, client_bus, ev, running_store, until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REFUSE = """
CREATE OR REPLACE FUNCTION eunomia_refuse() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '{code}'; END
$$ LANGUAGE plpgsql;
CREATE TRIGGER eunomia_refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION eunomia_refuse();
"""


def test_errors_that_are_not_the_datas_fault_are_transient():
    b = PostgresBackend("postgresql://x@127.0.0.1/x")
    for exc in (asyncpg.DiskFullError(), asyncpg.ReadOnlySQLTransactionError(), asyncpg.AdminShutdownError(),
                asyncpg.OutOfMemoryError(), asyncpg.CannotConnectNowError(), asyncpg.QueryCanceledError(),
                asyncpg.DeadlockDetectedError(), ConnectionResetError()):
        assert b.is_transient(exc), type(exc).__name__
    for exc in (asyncpg.NotNullViolationError(), asyncpg.StringDataRightTruncationError(),
                asyncpg.UntranslatableCharacterError(), asyncpg.UniqueViolationError()):
        assert not b.is_transient(exc), type(exc).__name__


@pytest.mark.parametrize("code", ["53100", "25006"])  # disk_full, read_only_sql_transaction
async def test_refused_writes_are_retried_until_the_database_takes_them(nats_server, postgres, tmp_path, code):
    url = await postgres.new_database()
    first = [ev("open", path=f"/a{i}") for i in range(50)]
    held = [ev("open", path=f"/b{i}") for i in range(120)]
    async with running_store(nats_server.url, url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "open"), first)
        await until(lambda: svc.stats.total("events_stored_total") == 50, "first events stored")
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(REFUSE.format(code=code))
            for i in range(0, 120, 30):
                await bus.publish_batch(subjects.event("n1", "open"), held[i:i + 30])
            # refused well past the termination limit (5 deliveries, 1 s apart)
            await until(lambda: svc.stats.total("write_errors_total") >= 8, "writes refused", 60)
            await admin.execute("DROP TRIGGER eunomia_refuse ON events")
            # an administrator ends the store's sessions: they reconnect
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await admin.close()
        await until(lambda: svc.stats.total("events_stored_total") == 170, "all stored once writes work", 90)
        assert svc.stats.total("unwritable_total") == 0
        ids = {e["id"] for e in await all_pages(c, "events", limit=1000)}
    assert ids == {e["id"] for e in first + held}


async def test_writes_back_off_while_the_database_refuses(postgres):
    from services.store import pg_backend
    b = PostgresBackend(await postgres.new_database())
    await b.open()
    try:
        admin = await asyncpg.connect(b.url)
        try:
            await admin.execute(REFUSE.format(code="53100"))
            delays = []
            for _ in range(4):
                with pytest.raises(asyncpg.DiskFullError):
                    await b.write([ev("open", path="/x")], [])
                delays.append(b._backoff_s)
            assert delays == sorted(delays) and delays[0] == pg_backend.BACKOFF_FIRST_S and delays[-1] > delays[0]
            await admin.execute("DROP TRIGGER eunomia_refuse ON events")
        finally:
            await admin.close()
        await b.write([ev("open", path="/y")], [])
        assert b._backoff_s == 0.0
    finally:
        await b.close()


async def test_a_partition_dropped_under_the_writer_is_made_again(postgres):
    """Another replica's retention drops the partition this store wrote to (its cache still lists it):
    the write that finds no partition is transient, and the next one makes the partition again."""
    from services.store.backend import open_backend
    url = await postgres.new_database()
    b = open_backend(url)
    await b.open()
    try:
        now = time.time_ns()
        await b.write([ev("open", ts=now, path="/first")], [])
        con = await asyncpg.connect(url)
        try:
            for (name,) in await con.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                                           "ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"):
                await con.execute(f"DROP TABLE {name}")
        finally:
            await con.close()
        with pytest.raises(asyncpg.CheckViolationError) as e:
            await b.write([ev("open", ts=now + 1, path="/second")], [])
        assert b.is_transient(e.value)
        res = await b.write([ev("open", ts=now + 1, path="/second")], [])
        assert res.events == 1 and (await b.counts())["events"] == 1
    finally:
        await b.close()
