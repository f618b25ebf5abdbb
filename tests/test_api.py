"""The HTTP API against a real nats-server and a real StoreService (SQLite)."""
from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid

import aiohttp
import pytest

from services.api.auth import load_or_create_token
from services.api.config import ApiConfig
from services.api.service import ApiService
from shared import subjects
from shared.config import CommonConfig, ConfigError
from tests.apistack import NODE, ApiStack, alert, scenario
from tests.conftest import ROOT
from tests.events import container

ROUTES = ["/api/v1/events", "/api/v1/alerts", "/api/v1/containers", "/api/v1/processes/tree",
          "/api/v1/network/graph", "/api/v1/openapi.json", "/api/v1/alerts/ws"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One stack for the module, with two containers' activity and alerts stored."""
    with ApiStack(tmp_path_factory.mktemp("api"), ApiConfig(port=0, ws_queue=4)) as st:
        tag = uuid.uuid4().hex[:8]
        web, db = container(f"web-{tag}"), container(f"db-{tag}")
        t0 = time.time_ns() - 60 * 10**9
        evs = scenario(web, t0, cgroup_id=7001) + scenario(db, t0 + 1000, cgroup_id=7002, pid=200)
        rules = {p: f"rule-{p}-{tag}" for p in ("notice", "warning", "critical")}
        alerts = [alert(web, t0 + 2000 + i, rule=r, priority=p.upper()) for i, (p, r) in enumerate(rules.items())]
        st.publish(subjects.event(NODE, "exec"), evs)
        for a in alerts:
            st.publish(subjects.alert(a["priority"]), [a])
        st.wait_stored(len(evs), len(alerts))
        yield {"stack": st, "web": web, "db": db, "t0": t0, "rules": rules, "tag": tag}


async def get(world, path, token="default", **params):
    st = world["stack"]
    headers = {"Authorization": f"Bearer {st.token if token == 'default' else token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(st.url + path, params=params, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def test_every_api_route_needs_the_token(world):
    for path in ROUTES:
        status, body = await get(world, path, token=None)
        assert status == 401 and "missing token" in body["error"], (path, body)
        status, body = await get(world, path, token="x" * 40)
        assert status == 401 and body["error"] == "invalid token", path
    async with aiohttp.ClientSession() as s:
        async with s.get(world["stack"].url + "/api/v1/events", headers={"Authorization": "Basic abc"}) as r:
            assert r.status == 401 and "Bearer" in (await r.json())["error"]
        # ?token= is only for the WebSocket, not for plain routes
        async with s.get(world["stack"].url + "/api/v1/events", params={"token": world["stack"].token}) as r:
            assert r.status == 401
        async with s.get(world["stack"].url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


def test_token_file_is_created_private_and_reused(world, tmp_path):
    st = world["stack"]
    path = st.api.cfg.token_path(st.api.common.data_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == st.token and len(st.token) >= 32
    assert load_or_create_token(path) == st.token
    fresh = load_or_create_token(tmp_path / "sub" / "tok")
    assert fresh != st.token and stat.S_IMODE(os.stat(tmp_path / "sub" / "tok").st_mode) == 0o600


def test_config_is_validated():
    for kw, name in (({"port": 70000}, "api.port"), ({"token": "short"}, "api.token"),
                     ({"cors_origin": "evil"}, "api.cors_origin"), ({"host": "a b"}, "api.host"),
                     ({"ws_queue": 0}, "api.ws_queue")):
        with pytest.raises(ConfigError, match=name):
            ApiConfig(**kw)
    assert ApiConfig().host == "127.0.0.1" and ApiConfig().cors_origin is None


async def test_event_filters(world):
    web = world["web"]
    status, page = await get(world, "/api/v1/events", kind="exec", container=web["name"])
    assert status == 200
    assert sorted(e["pid"] for e in page["items"]) == [100, 101, 102]
    assert {e["container"]["id"] for e in page["items"]} == {web["id"]}
    _, page = await get(world, "/api/v1/events", container=web["id"][:12], pid="102", kind="open", limit="100")
    assert len(page["items"]) == 20 and page["next_cursor"] is None
    _, page = await get(world, "/api/v1/events", container=web["name"], q="file07")
    assert [e["path"] for e in page["items"]] == ["/etc/file07"]
    t0 = world["t0"]
    _, page = await get(world, "/api/v1/events", container=web["name"], since=str(t0 + 40), until=str(t0 + 44))
    assert sorted(e["path"] for e in page["items"]) == [f"/etc/file0{i}" for i in range(5)]
    _, page = await get(world, "/api/v1/events", kind="connect", node=NODE, container=world["db"]["name"])
    assert [(e["daddr"], e["dport"]) for e in page["items"]] == [("10.1.2.3", 443)]


async def test_paging_with_cursors(world):
    seen, cursor, sizes = [], None, []
    while True:
        params = {"kind": "open", "container": world["web"]["name"], "limit": "7"}
        if cursor:
            params["cursor"] = cursor
        status, page = await get(world, "/api/v1/events", **params)
        assert status == 200
        sizes.append(len(page["items"]))
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sizes == [7, 7, 6]
    assert len({e["id"] for e in seen}) == 20
    assert [e["ts"] for e in seen] == sorted((e["ts"] for e in seen), reverse=True)


@pytest.mark.parametrize("path,params,names", [
    ("/api/v1/events", {"limit": "0"}, "'limit'"),
    ("/api/v1/events", {"limit": "lots"}, "'limit'"),
    ("/api/v1/events", {"pid": "-3"}, "'pid'"),
    ("/api/v1/events", {"since": "yesterday"}, "'since'"),
    ("/api/v1/events", {"kind": "EXEC;drop"}, "'kind'"),
    ("/api/v1/events", {"color": "red"}, "'color'"),
    ("/api/v1/events", {"since": "2030-01-01T00:00:00", "until": "2020-01-01"}, "'since'"),
    ("/api/v1/events", {"cursor": "not-a-cursor"}, "cursor"),
    ("/api/v1/alerts", {"priority": "urgent"}, "'priority'"),
    ("/api/v1/processes/tree", {"pid": "x"}, "'pid'"),
    ("/api/v1/network/graph", {"since": "soon"}, "'since'"),
])
async def test_bad_params_get_400_naming_the_parameter(world, path, params, names):
    status, body = await get(world, path, **params)
    assert status == 400, body
    assert names in body["error"], body


async def test_alert_filters(world):
    rules = world["rules"]
    status, page = await get(world, "/api/v1/alerts", priority="warning", container=world["web"]["name"])
    assert status == 200
    assert {a["rule"] for a in page["items"]} == {rules["warning"], rules["critical"]}
    _, page = await get(world, "/api/v1/alerts", rule=rules["notice"])
    assert [a["priority"] for a in page["items"]] == ["NOTICE"]


async def test_events_and_alerts_filter_by_kubernetes_namespace_and_pod(world):
    st, tag = world["stack"], world["tag"]
    ns, pod = f"shop-{tag}", f"web-7d4b9c8f5d-{tag[:5]}"
    ctr = container(f"k8s-{tag}")
    t0 = time.time_ns() - 30 * 10**9
    evs = scenario(ctr, t0, cgroup_id=7003, pid=300)
    k8s = {"pod": pod, "namespace": ns, "pod_uid": str(uuid.uuid4()), "container": "app", "labels": {"app": "web"},
           "owner": {"kind": "ReplicaSet", "name": "web-7d4b9c8f5d"}, "workload": {"kind": "Deployment", "name": "web"}}
    for e in evs:
        e["k8s"] = k8s
    a = alert(ctr, t0 + 5000, rule=f"rule-k8s-{tag}")
    a["k8s"] = a["event"]["k8s"] = k8s
    before = st.call(st.api.store.stats())
    st.publish(subjects.event(NODE, "exec"), evs)
    st.publish(subjects.alert("WARNING"), [a])
    st.wait_stored(before.get("events", 0) + len(evs), before.get("alerts", 0) + 1)
    status, page = await get(world, "/api/v1/events", namespace=ns, limit="1000")
    assert status == 200 and len(page["items"]) == len(evs)
    assert {e["k8s"]["pod"] for e in page["items"]} == {pod}
    _, page = await get(world, "/api/v1/events", namespace=ns, pod=pod, kind="connect")
    assert [e["daddr"] for e in page["items"]] == ["10.1.2.3"]
    _, page = await get(world, "/api/v1/events", namespace=ns, pod="other-pod")
    assert page["items"] == []
    status, page = await get(world, "/api/v1/alerts", namespace=ns)
    assert status == 200 and [x["rule"] for x in page["items"]] == [f"rule-k8s-{tag}"]
    _, page = await get(world, "/api/v1/alerts", pod=pod)
    assert [x["k8s"]["namespace"] for x in page["items"]] == [ns]
    for bad in ("Shop", "a;b", "-x"):
        status, body = await get(world, "/api/v1/events", namespace=bad)
        assert status == 400 and "'namespace'" in body["error"], body


async def test_containers_tree_and_graph_come_from_published_events(world):
    web, db = world["web"], world["db"]
    _, body = await get(world, "/api/v1/containers")
    by_id = {c["id"]: c for c in body["items"]}
    assert by_id[web["id"]]["name"] == web["name"] and by_id[web["id"]]["events"] == 26
    assert by_id[db["id"]]["cgroup_id"] == 7002 and by_id[db["id"]]["image"] == "localhost/bb:latest"

    _, body = await get(world, "/api/v1/processes/tree", container=web["name"])
    [root] = body["items"]
    assert root["pid"] == 100 and root["exe"] == "/bin/sh"
    assert sorted((c["pid"], c["exe"]) for c in root["children"]) == [(101, "/bin/wget"), (102, "/bin/cat")]

    _, g = await get(world, "/api/v1/network/graph")
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes[f"c:{web['id']}"]["label"] == web["name"] and nodes["ip:10.1.2.3"]["kind"] == "external"
    edges = {(e["source"], e["target"], e["port"]) for e in g["edges"]}
    assert {(f"c:{web['id']}", "ip:10.1.2.3", 443), (f"c:{db['id']}", "ip:10.1.2.3", 443)} <= edges


async def test_openapi_describes_every_route(world):
    from openapi_spec_validator import validate

    status, doc = await get(world, "/api/v1/openapi.json")
    assert status == 200
    validate(doc)
    for path in ROUTES + ["/healthz", "/metrics", "/api/v1/top", "/api/v1/profile"]:
        assert path in doc["paths"], path
    names = {p["name"] for p in doc["paths"]["/api/v1/events"]["get"]["parameters"]}
    assert {"kind", "container", "pid", "since", "until", "q", "limit", "cursor"} <= names


async def test_websocket_gets_live_alerts(world):
    st = world["stack"]
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(st.url + "/api/v1/alerts/ws", params={"token": st.token}) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "hello"
            # malformed messages on the alert subjects are counted and skipped; the feed carries on
            bad_before = st.api.stats.get("bus_malformed_total", subject="eunomia.alert.error")
            for junk in (b"\x00\xffgarbage", b'{"not": "a batch"}', b'[{"rule": "no head"}]'):
                await asyncio.to_thread(st.publish_raw, subjects.alert("error"), junk)
            a = alert(world["web"], time.time_ns(), rule=f"live-{world['tag']}", priority="ERROR")
            await asyncio.to_thread(st.publish, subjects.alert("error"), [a])
            msg = await ws.receive_json(timeout=10)
            assert msg["type"] == "alert" and msg["alert"]["id"] == a["id"] and msg["alert"]["rule"] == a["rule"]
            assert st.api.stats.get("bus_malformed_total", subject="eunomia.alert.error") == bad_before + 3
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(st.url + "/api/v1/alerts/ws", params={"token": "wrong" * 8})
        assert e.value.status == 401


async def test_slow_websocket_client_is_dropped_and_counted(world):
    """A client that never reads falls a full queue (4 batches) behind: closed with 1013, counted."""
    st = world["stack"]
    before = st.api.stats.get("api_ws_clients_dropped_total", reason="slow")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(st.url + "/api/v1/alerts/ws", params={"token": st.token}) as ws:
            big = "x" * 60_000   # enough batches of these fill the socket buffers, then the queue
            for _ in range(400):
                await asyncio.to_thread(st.publish, subjects.alert("debug"),
                                        [alert(None, time.time_ns(), rule=f"flood-{world['tag']}",
                                               priority="DEBUG", output=big)])
                if st.api.stats.get("api_ws_clients_dropped_total", reason="slow") > before:
                    break
            assert st.api.stats.get("api_ws_clients_dropped_total", reason="slow") == before + 1
            while True:  # drain what was buffered: the stream ends with the server's close frame
                msg = await ws.receive(timeout=20)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert ws.close_code == 1013


async def test_store_unreachable_gives_503(nats_server, tmp_path):
    common = CommonConfig(nats_url=nats_server.url, node="n503", data_dir=tmp_path)
    async with ApiService(ApiConfig(port=0, store_timeout_s=0.5), common) as api:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api.token}"}) as s:
            for path in ("/api/v1/events", "/api/v1/containers", "/api/v1/network/graph"):
                async with s.get(api.url + path) as r:
                    body = await r.json()
                    assert r.status == 503 and "store unavailable" in body["error"], body
            async with s.get(api.url + "/metrics") as r:   # /metrics still answers without a store
                assert r.status == 200
    assert api.stats.total("api_store_unavailable_total") == 3


async def test_cors_is_off_by_default_and_allows_only_the_named_origin(nats_server, tmp_path):
    common = CommonConfig(nats_url=nats_server.url, node="ncors", data_dir=tmp_path)
    for origin in (None, "http://dash.example"):
        async with ApiService(ApiConfig(port=0, cors_origin=origin), common) as api:
            async with aiohttp.ClientSession() as s:
                for sent in ("http://dash.example", "http://evil.example"):
                    async with s.options(api.url + "/api/v1/events", headers={
                            "Origin": sent, "Access-Control-Request-Method": "GET"}) as r:
                        allowed = r.headers.get("Access-Control-Allow-Origin")
                        assert allowed == (sent if origin == sent else None), (origin, sent, allowed)


def test_cli_prints_dashboard_url_never_the_token_and_serves(nats_server, tmp_path):
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "--nats", nats_server.url, "--node", "ncli",
                             "--data-dir", str(tmp_path), "api", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=str(ROOT))
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        dash = next(line for line in lines if line.startswith("Dashboard: ")).split()[1]
        token = (tmp_path / "api-token").read_text().strip()
        assert not any(token in line for line in lines), lines
        assert str(tmp_path / "api-token") in lines[1]
        assert dash.endswith("/") and dash.startswith("http://127.0.0.1:")
        base = dash.rstrip("/")
        with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(dash, timeout=10) as r:
            assert b"<title>Eunomia</title>" in r.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_placeholder_and_weak_tokens_are_refused(tmp_path):
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/20-config.yaml").read_text()))
    shipped = next(d for d in docs if d and d.get("kind") == "Secret" and d["metadata"]["name"] == "eunomia-api")
    for bad in (shipped["stringData"]["token"], "a" * 40, "short"):
        with pytest.raises(ConfigError, match="api.token"):
            ApiConfig(token=bad)
        f = tmp_path / "tok"
        f.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=str(f)):
            load_or_create_token(f)
    made = load_or_create_token(tmp_path / "new")  # a generated token passes its own check
    assert ApiConfig(token=made).token == made
