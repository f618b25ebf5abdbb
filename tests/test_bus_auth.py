"""The bus's identities against a real nats-server with the generated authorization:
anonymous and wrong passwords are refused; each identity can do its job and is
denied what it must not do (shared/busauth.py)."""
from __future__ import annotations

import asyncio
import stat
import subprocess
from pathlib import Path

import nats
import orjson
import pytest
import pytest_asyncio

from shared import busauth, subjects
from shared.natsserver import NatsServer, NatsServerConfig, TlsFiles, free_port
from shared.streams import ensure_streams

ROOT = Path(__file__).resolve().parent.parent
N1, N2 = "n1", "n2"
EVENT = {"v": 1, "id": "e1", "ts": 1.0, "node": N1, "kind": "open", "pid": 1, "tid": 1, "ppid": 0, "uid": 0,
         "gid": 0, "comm": "x", "cgroup_id": 1}


class Conn:
    """One identity's connection, with the permission errors the server sent it."""

    def __init__(self, nc, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors

    async def denied(self, what: str) -> bool:
        """Whether the server sent a permissions violation naming `what` (waits generously)."""
        for _ in range(400):
            await asyncio.sleep(0.05)
            if any("permissions violation" in e.lower() and what.lower() in e.lower() for e in self.errors):
                return True
        return False


async def _delivered(sender: "Conn", sub, subject: str, data: bytes, within: float = 15.0):
    """The message `sub` receives once `sender` publishes to `subject`, published again each second
    while none has come: two bare nats-py clients against this nats-server lose the first message
    to a subscription flushed a moment before about 1 time in 100 here (not found why). What is
    tested is who may send and receive, not that moment."""
    end = asyncio.get_running_loop().time() + within
    while True:
        await sender.nc.publish(subject, data)
        await sender.nc.flush()
        try:
            return await sub.next_msg(1.0)
        except nats.errors.TimeoutError:
            if asyncio.get_running_loop().time() > end:
                raise


async def _request_once_answered(conn: "Conn", subject: str, within: float = 10.0):
    """A request, repeated while the server says no one answers: as in _delivered, a subscription
    flushed on another connection can be missed for a moment (one full run here)."""
    end = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await conn.nc.request(subject, b"{}", timeout=5)
        except nats.errors.NoRespondersError:
            if asyncio.get_running_loop().time() > end:
                raise
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def server(tmp_path):
    creds = busauth.ensure(tmp_path / "creds", busauth.users([N1, N2]))
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp_path / "js", auth=creds)) as srv:
        conns: list = []

        async def connect(user: str | None, password: str | None = None) -> Conn:
            errors: list[str] = []

            async def cb(e):
                errors.append(str(e))
            cred = None if user is None else busauth.Credential(user, password or creds[user].password)
            nc = await nats.connect(srv.url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=3,
                                    error_cb=cb, **busauth.connect_kwargs(cred))
            conns.append(nc)
            return Conn(nc, errors)
        srv.connect, srv.creds = connect, creds
        yield srv
        for nc in conns:
            await nc.close()


def test_credential_files_are_private(tmp_path):
    d = tmp_path / "creds"
    first = busauth.ensure(d, busauth.users([N1]))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert busauth.ensure(d, busauth.users([N1])) == first  # generated once, then reused
    assert len({c.password for c in first.values()}) == len(first)
    text = busauth.server_authorization(first)
    assert all(c.password not in text for c in first.values())  # the server config holds hashes only


async def test_the_server_config_with_hashes_stays_private_in_the_data_directory(tmp_path):
    # a server whose owner is SIGKILLed leaves its config behind: it must be in the server's own
    # directory, readable by root only, not in /tmp
    creds = busauth.ensure(tmp_path / "creds", busauth.users([N1]))
    srv = NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp_path / "js", auth=creds))
    async with srv:
        conf = Path(srv._conf)
        assert conf.parent == tmp_path / "js" and stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert "$2" in conf.read_text()               # bcrypt hashes are what it holds
    assert not conf.exists()


async def test_anonymous_and_wrong_passwords_are_refused(server):
    with pytest.raises(Exception):
        await server.connect(None)
    with pytest.raises(Exception):
        await server.connect(busauth.ADMIN, "x" * 32)
    with pytest.raises(Exception):
        await server.connect(busauth.ROUTE)  # the route credential is not a client identity


async def test_each_identity_does_its_job_and_nothing_else(server):
    admin = await server.connect(busauth.ADMIN)
    await ensure_streams(admin.nc.jetstream())
    probe = await server.connect(f"probe-{N1}")
    enricher = await server.connect(f"enricher-{N1}")
    alerter = await server.connect(busauth.ALERTER)
    store = await server.connect(busauth.STORE)
    api = await server.connect(busauth.API)

    # the probe feeds its enricher; forged raw events from the enricher or another node's raw are refused
    raw = await enricher.nc.subscribe(subjects.raw(N1))
    await enricher.nc.flush()
    assert orjson.loads((await _delivered(probe, raw, subjects.raw(N1), orjson.dumps([EVENT]))).data)[0]["id"] == "e1"
    await enricher.nc.publish(subjects.raw(N1), b"[]")
    assert await enricher.denied(subjects.raw(N1))
    await probe.nc.publish(subjects.raw(N2), b"[]")
    assert await probe.denied(subjects.raw(N2))
    await probe.nc.publish(subjects.alert("critical"), b"[]")
    assert await probe.denied(subjects.alert("critical"))
    await enricher.nc.publish(subjects.event(N2, "open"), b"[]")  # another node's events
    assert await enricher.denied(subjects.event(N2, "open"))
    await api.nc.publish(subjects.ctl_probe(N1), b'{"op":"status"}')  # control ops: admin only
    assert await api.denied(subjects.ctl_probe(N1))
    while True:  # nothing forged got through (a late copy of the probe's own event may)
        try:
            assert (await raw.next_msg(0.5)).data != b"[]"
        except nats.errors.TimeoutError:
            break

    # the probe cannot join the alerter's queue nor sniff store queries, replies or other probes' control
    for subject in (subjects.EVENT_ALL, f"{subjects.PREFIX}.store.>", "_INBOX.>", f"_INBOX.{busauth.API}.>",
                    subjects.ctl_probe(N2), subjects.STATS_ALL):
        await probe.nc.subscribe(subject, queue="alerter" if subject == subjects.EVENT_ALL else "")
        assert await probe.denied(subject), subject

    # store queries: the api asks, the store answers, on the api's private inbox
    async def answer(msg):
        await msg.respond(b'{"items": []}')
    await store.nc.subscribe(subjects.store("events"), queue="store", cb=answer)
    await store.nc.flush()
    reply = await _request_once_answered(api, subjects.store("events"))
    assert orjson.loads(reply.data) == {"items": []}
    await probe.nc.publish(subjects.store("events"), b"{}")
    assert await probe.denied(subjects.store("events"))

    # events reach the alerter (queue group); alerts are durable (JetStream acks reach the alerter)
    got = await alerter.nc.subscribe(subjects.EVENT_ALL, queue="alerter")
    await alerter.nc.flush()
    assert (await _delivered(enricher, got, subjects.event(N1, "open"), orjson.dumps([EVENT]))).subject == \
        subjects.event(N1, "open")
    ack = await alerter.nc.jetstream().publish(subjects.alert("warning"), b"[]", timeout=5)
    assert ack.stream == "ALERTS"

    # the store consumes the streams; nobody but admin deletes or purges them
    js = store.nc.jetstream()
    sub = await js.pull_subscribe(subjects.ALERT_ALL, durable="store-test", stream="ALERTS")
    msgs = await sub.fetch(1, timeout=5)
    await msgs[0].ack()
    for who in (store, alerter, api):
        with pytest.raises(Exception):
            await who.nc.jetstream().delete_stream("EVENTS", timeout=1)
        with pytest.raises(Exception):
            await who.nc.jetstream().purge_stream("ALERTS", timeout=1)
    info = await admin.nc.jetstream().stream_info("ALERTS")
    assert info.state.messages == 1


async def test_cluster_routes_need_the_route_credential(tmp_path):
    creds = busauth.ensure(tmp_path / "creds", busauth.users([N1]))
    p1, p2, c1, c2 = free_port(), free_port(), free_port(), free_port()

    def cfg(i, port, cport, peer, auth):
        return NatsServerConfig(port=port, name=f"s{i}", store_dir=tmp_path / f"js{i}", cluster_port=cport,
                                routes=[f"nats://127.0.0.1:{peer}"], auth=auth)
    async with NatsServer(cfg(1, p1, c1, c2, creds)), NatsServer(cfg(2, p2, c2, c1, creds)):
        a = await nats.connect(f"nats://127.0.0.1:{p1}", **busauth.connect_kwargs(creds[busauth.ADMIN]))
        b = await nats.connect(f"nats://127.0.0.1:{p2}", **busauth.connect_kwargs(creds[busauth.ADMIN]))
        try:
            sub = await b.subscribe("eunomia.x")
            await b.flush()
            for _ in range(100):  # the route comes up
                await a.publish("eunomia.x", b"hi")
                try:
                    assert (await sub.next_msg(0.2)).data == b"hi"
                    break
                except nats.errors.TimeoutError:
                    continue
            else:
                raise AssertionError("no message crossed the authenticated route")
        finally:
            await a.close()
            await b.close()
    # a server with the wrong route password cannot join
    other = dict(creds)
    other[busauth.ROUTE] = busauth.Credential(busauth.ROUTE, "y" * 40)
    async with NatsServer(cfg(1, p1, c1, c2, creds)), NatsServer(cfg(2, p2, c2, c1, other)):
        a = await nats.connect(f"nats://127.0.0.1:{p1}", **busauth.connect_kwargs(creds[busauth.ADMIN]))
        b = await nats.connect(f"nats://127.0.0.1:{p2}", **busauth.connect_kwargs(other[busauth.ADMIN]))
        try:
            sub = await b.subscribe("eunomia.x")
            await b.flush()
            for _ in range(10):
                await a.publish("eunomia.x", b"hi")
                with pytest.raises(nats.errors.TimeoutError):
                    await sub.next_msg(0.2)
        finally:
            await a.close()
            await b.close()


async def test_tls_for_clients_with_the_documented_certificates(tmp_path, monkeypatch):
    out = tmp_path / "certs"
    subprocess.run(["sh", str(ROOT / "deploy/nats/make-certs.sh"), str(out), "127.0.0.1"], check=True,
                   capture_output=True)
    tls = TlsFiles(cert=out / "server.pem", key=out / "server-key.pem", ca=out / "ca.pem")
    creds = busauth.ensure(tmp_path / "creds", busauth.users([N1]))
    async with NatsServer(NatsServerConfig(port=free_port(), auth=creds, tls=tls)) as srv:
        assert srv.url.startswith("tls://")
        with pytest.raises(Exception):  # plain text is refused
            await nats.connect(srv.url.replace("tls://", "nats://"), allow_reconnect=False,
                               max_reconnect_attempts=1, connect_timeout=2,
                               **{k: v for k, v in busauth.connect_kwargs(creds[busauth.ADMIN]).items()
                                  if k != "tls"})
        monkeypatch.setenv("EUNOMIA_NATS_CA", str(out / "ca.pem"))
        nc = await nats.connect(srv.url, **busauth.connect_kwargs(creds[busauth.ADMIN]))
        try:
            sub = await nc.subscribe("eunomia.t")
            await nc.publish("eunomia.t", b"ok")
            assert (await sub.next_msg(5)).data == b"ok"
        finally:
            await nc.close()


def test_cli_as_root_uses_the_admin_identity(server, tmp_path):
    import os
    import sys
    server_dir = tmp_path / "creds"  # what the fixture generated
    env = {**os.environ, busauth.CREDS_ENV: str(server_dir)}
    cmd = [sys.executable, "-m", "services.cli.main", "--nats", server.url, "--data-dir", str(tmp_path / "d"),
           "events", "--seconds", "1"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ok.returncode == 0 and "listening on" in ok.stderr + ok.stdout, ok.stderr
    env.pop(busauth.CREDS_ENV)
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert refused.returncode != 0 and "no bus credential nats-admin" in refused.stderr, refused.stderr
