"""AlerterService against a real nats-server with synthetic enriched events:
queue-group replicas, throttling, reloads, sinks (file, stdout, a real
webhook server) and malformed input."""
import asyncio
import re
from contextlib import asynccontextmanager

import orjson
import pytest
from aiohttp import web

from services.alerter.config import AlerterConfig
from services.alerter.service import AlerterService
from shared import bus as busmod
from shared import subjects
from shared.config import CommonConfig, ConfigError
from shared.natsserver import free_port
from shared.schema import new_event_id
from shared.service import running as service_running
from shared.stats import Stats

CTR = {"id": "ef" * 32, "name": "svc-test", "image": "localhost/x:1", "runtime": "podman", "labels": {}}

TEST_RULES = """
- rule: Tool ran
  desc: test rule
  condition: evt.type = execve and proc.name = tool
  output: tool ran (args=%proc.args container=%container.name)
  priority: WARNING
  tags: [test]
"""


def exec_ev(name="tool", args=("x",), container=CTR):
    argv = [name, *args]
    return {"id": new_event_id("n1"), "ts": 1, "node": "n1", "kind": "exec", "pid": 7, "tid": 7, "ppid": 1,
            "uid": 0, "gid": 0, "comm": name, "cgroup_id": 1, "filename": f"/bin/{name}", "argv": argv, "ret": 0,
            "proc": {"exe": f"/bin/{name}", "args": argv, "name": name, "pname": "bash", "ancestors": []},
            "container": container, "k8s": None}


async def until(pred, timeout=10.0, what="condition"):
    async def wait():
        while not pred():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(wait(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def running(url, node="t1", **cfg):
    return service_running(AlerterService(AlerterConfig(**cfg),
                                          CommonConfig(nats_url=url, node=node, stats_interval=0.5)))


@asynccontextmanager
async def client(url):
    """A test bus client collecting every alert."""
    got: list[dict] = []

    async def on(subject, alerts):
        for a in alerts:
            a["_subject"] = subject
        got.extend(alerts)

    async with busmod.connect(url, Stats("test")) as bus:
        await bus.subscribe_batches(subjects.ALERT_ALL, on)
        await bus.nc.flush()
        yield bus, got


@pytest.fixture
def rules_file(tmp_path):
    p = tmp_path / "rules.yaml"
    p.write_text(TEST_RULES)
    return p


async def test_two_replicas_in_a_queue_group_raise_every_alert_once(nats_server):
    n = 300
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, "r1", throttle_window_s=0) as a, \
            running(nats_server.url, "r2", throttle_window_s=0) as b:
        events = [exec_ev("apk", ("add", f"pkg{i}")) for i in range(n)]
        for i in range(0, n, 10):  # 30 messages, shared by the two replicas
            await bus.publish_batch(subjects.event("n1", "exec"), events[i:i + 10])
        await until(lambda: a.stats.total("events_evaluated_total") + b.stats.total("events_evaluated_total") == n,
                    what="all events evaluated")
        await until(lambda: len(got) >= n, what="all alerts")
        await asyncio.sleep(0.2)  # anything extra would show up now
    pkg = [x for x in got if x["rule"] == "Package management process in container"]
    assert len(got) == len(pkg) == n
    assert sorted(x["event"]["id"] for x in pkg) == sorted(e["id"] for e in events)
    assert len({x["id"] for x in pkg}) == n
    assert a.stats.total("events_evaluated_total") > 0 and b.stats.total("events_evaluated_total") > 0
    x = pkg[0]
    assert x["kind"] == "alert" and x["priority"] == "ERROR" and x["_subject"] == "eunomia.alert.error"
    assert x["container"] == CTR and x["node"] == "n1" and x["pid"] == 7 and "pkg" in x["output"]
    assert {"container", "software_mgmt"} <= set(x["tags"])


async def test_repeats_are_throttled_counted_and_summarized(nats_server, rules_file):
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, rules=(rules_file,), throttle_window_s=60, throttle_max_repeats=2,
                    summary_interval_s=0.1) as svc:
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev() for _ in range(10)])
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev(args=("other",))])
        await until(lambda: any(x.get("suppressed") for x in got), what="a summary")
    plain = [x for x in got if "suppressed" not in x]
    summaries = [x for x in got if "suppressed" in x]
    assert [x["output"] for x in plain].count("tool ran (args=x container=svc-test)") == 2
    assert [x["output"] for x in plain].count("tool ran (args=other container=svc-test)") == 1
    assert len(summaries) == 1 and summaries[0]["suppressed"] == 8
    assert summaries[0]["rule"] == "Tool ran" and "throttled" in summaries[0]["tags"]
    assert "8 repeated alert(s) suppressed" in summaries[0]["output"]
    assert svc.stats.get("alerts_suppressed_total", rule="Tool ran", reason="repeat") == 8
    assert svc.stats.get("alerts_total", rule="Tool ran", priority="WARNING") == 11


async def test_bad_reload_keeps_the_old_rules_and_says_where(nats_server, rules_file):
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, rules=(rules_file,), reload_check_s=0.1, throttle_window_s=0) as svc:
        rules_file.write_text(TEST_RULES + "\n- rule: Broken\n  desc: x\n  condition: proc.nam = x\n"
                              "  output: x\n  priority: WARNING\n")
        reply = await bus.request_json(subjects.CTL_ALERTER, {"op": "reload"})
        assert reply["ok"] is False and reply["rules"] == 1
        assert reply["error"].startswith(f"{rules_file}:11:")
        assert "proc.nam" in reply["error"]
        assert svc.stats.total("rule_reload_errors_total") >= 1 and svc.stats.get("rule_reload_failed") == 1
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev()])
        await until(lambda: len(got) == 1, what="alert from the old rules")
        assert got[0]["rule"] == "Tool ran"
        # a fixed file is picked up by the mtime watch, without a request
        rules_file.write_text(TEST_RULES.replace("Tool ran", "Tool ran v2"))
        await until(lambda: svc.stats.total("rule_reloads_total") >= 1, what="reload on change")
        assert svc.stats.get("rule_reload_failed") == 0 and svc.last_reload_error is None
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev()])
        await until(lambda: len(got) == 2, what="alert from the new rules")
        assert got[1]["rule"] == "Tool ran v2"
        status = await bus.request_json(subjects.CTL_ALERTER, {"op": "status"})
        assert status["ok"] and status["rules"]["rules"] == 1
        bad = await bus.request_json(subjects.CTL_ALERTER, {"op": "explode"})
        assert bad["ok"] is False and "unknown op" in bad["error"]


def test_broken_rules_at_start_are_a_config_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- rule: x\n  condition: evt.type = \n")
    svc = AlerterService(AlerterConfig(rules=(p,)), CommonConfig(nats_url="nats://127.0.0.1:1"))
    with pytest.raises(ConfigError, match=re.escape(f"rules: {p}:1:3: rule 'x'")):
        asyncio.run(svc.__aenter__())
    with pytest.raises(ConfigError, match="rules: .* does not exist"):
        AlerterConfig(rules=(tmp_path / "missing.yaml",))
    with pytest.raises(ConfigError, match="min_priority"):
        AlerterConfig(min_priority="LOUD")
    with pytest.raises(ConfigError, match="webhooks"):
        AlerterConfig(webhooks=("ftp://x",))


async def test_file_stdout_and_retrying_webhook_sinks(nats_server, rules_file, tmp_path, capfd):
    posts: list[list[dict]] = []
    calls = 0

    async def hook(request):
        nonlocal calls
        calls += 1
        if calls <= 2:
            return web.Response(status=500, text="not yet")
        posts.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    out = tmp_path / "sub" / "alerts.jsonl"
    try:
        async with client(nats_server.url) as (bus, got), \
                running(nats_server.url, rules=(rules_file,), file=out, stdout=True, throttle_window_s=0,
                        webhooks=(f"http://127.0.0.1:{port}/hook", dead), webhook_retries=3,
                        webhook_backoff_s=0.05) as svc:
            await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev(args=(str(i),)) for i in range(5)])
            await until(lambda: sum(len(p) for p in posts) == 5, what="webhook delivery")
            await until(lambda: svc.stats.get("alerter_sink_dropped_total", sink="webhook", reason="failed") == 5,
                        what="dead webhook drops counted")
            await until(lambda: out.exists() and len(out.read_text().splitlines()) == 5, what="file sink")
            await until(lambda: len(got) == 5, what="nats sink")
    finally:
        await runner.cleanup()
    lines = [orjson.loads(x) for x in out.read_text().splitlines()]
    assert [x["output"] for x in lines] == [f"tool ran (args={i} container=svc-test)" for i in range(5)]
    stdout_alerts = [orjson.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    assert sorted(x["id"] for x in stdout_alerts) == sorted(x["id"] for x in lines)
    assert sorted(a["id"] for p in posts for a in p) == sorted(x["id"] for x in lines)
    assert calls >= 3 and svc.stats.total("alerter_webhook_retries_total") >= 2 + 3  # 2 here, 3 on the dead one
    assert svc.stats.get("alerter_sink_delivered_total", sink="file") == 5


async def test_malformed_messages_are_counted_and_the_service_carries_on(nats_server, rules_file):
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, rules=(rules_file,), throttle_window_s=0) as svc:
        subj = subjects.event("n1", "exec")
        await bus.publish(subj, b"{nope")
        await bus.publish(subj, b'[{"kind": "exec"}]')
        await bus.publish_batch(subj, [{**exec_ev(), "proc": "not an object"}])  # odd shape: no crash
        await bus.publish_batch(subj, [exec_ev(args=("after",))])
        await until(lambda: len(got) == 1, what="alert after bad input")
        assert got[0]["output"] == "tool ran (args=after container=svc-test)"
        assert svc.stats.total("bus_malformed_total") == 2
        assert svc.stats.total("events_evaluated_total") == 2


async def test_drop_and_execute_found_when_the_open_arrives_after_the_exec(nats_server):
    async with client(nats_server.url) as (bus, got), running(nats_server.url, throttle_window_s=0):
        ex = {**exec_ev("payload"), "filename": "/tmp/payload", "ts": 2000}
        ex["proc"]["exe"] = "/tmp/payload"
        op = {**exec_ev(), "kind": "open", "path": "/tmp/payload", "flags": 0o101, "mode": 0o755, "ret": 3,
              "ts": 1000}
        await bus.publish_batch(subjects.event("n1", "exec"), [ex])
        await bus.publish_batch(subjects.event("n1", "open"), [op])
        await until(lambda: any(a["rule"] == "Drop and execute new binary in container" for a in got),
                    what="late drop-and-execute alert")
        a = next(a for a in got if a["rule"] == "Drop and execute new binary in container")
        assert a["event"]["id"] == ex["id"] and a["priority"] == "CRITICAL"


@pytest.mark.parametrize("broken", [
    "- rule: R\n  desc: d\n  condition: " + "not " * 30000 + "proc.name = a\n  output: o\n  priority: NOTICE\n",
    "[" * 100000,
    "- rule: R\n  desc: d\n  condition: proc.name = a\n  output: o\n  priority: NOTICE\n  tags: {x: [1]}\n",
    "# " + "x" * (9 << 20) + "\n",
])
async def test_malformed_file_on_watch_keeps_old_rules_and_the_loop(nats_server, rules_file, broken):
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, rules=(rules_file,), reload_check_s=0.1, throttle_window_s=0) as svc:
        rules_file.write_text(broken)
        await until(lambda: svc.stats.total("rule_reload_errors_total") >= 1, what="failed reload counted", timeout=60)
        assert re.match(rf"^{re.escape(str(rules_file))}:\d+:\d+: ", svc.last_reload_error), svc.last_reload_error
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev()])
        await until(lambda: len(got) == 1, what="alert from the old rules", timeout=60)
        # the watch goes on: a fixed file is loaded
        rules_file.write_text(TEST_RULES.replace("Tool ran", "Tool ran v2"))
        await until(lambda: svc.stats.total("rule_reloads_total") >= 1, what="reload after the fix", timeout=60)
        assert svc.stats.get("rule_reload_failed") == 0


async def test_watch_loop_failure_is_logged_counted_and_restarted(nats_server, rules_file, monkeypatch):
    async with running(nats_server.url, rules=(rules_file,), reload_check_s=0.05, throttle_window_s=0) as svc:
        real, calls = AlerterConfig.files, []

        def flaky(cfg):
            calls.append(1)
            if len(calls) <= 2:
                raise RuntimeError("disk on fire")   # not an OSError: the loop itself fails
            return real(cfg)
        monkeypatch.setattr(AlerterConfig, "files", flaky)
        await until(lambda: svc.stats.get("alerter_task_restarts_total", task="rules-watch") == 2,
                    what="two restarts counted", timeout=60)
        rules_file.write_text(TEST_RULES.replace("Tool ran", "Tool ran v3"))
        await until(lambda: svc.stats.total("rule_reloads_total") >= 1, what="the restarted watch reloads", timeout=60)


async def test_a_flooding_container_cannot_crowd_out_another(nats_server, rules_file):
    """Unique command lines from one container fold into its overflow key past its
    cap; another container's alerts are still raised, and everything is counted."""
    other = {**CTR, "id": "0a" * 32, "name": "quiet"}
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, rules=(rules_file,), throttle_window_s=60, throttle_max_repeats=2,
                    throttle_keys_per_container=10, throttle_max_keys=15, summary_interval_s=0.1) as svc:
        flood = [exec_ev(args=(f"unique-{i}",)) for i in range(500)]
        for i in range(0, 500, 50):
            await bus.publish_batch(subjects.event("n1", "exec"), flood[i:i + 50])
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev(args=("mine",), container=other)])
        await until(lambda: any(x["container"]["id"] == other["id"] for x in got), what="the quiet one's alert", timeout=60)
        await until(lambda: any(x.get("suppressed") for x in got), what="a summary", timeout=60)
        assert svc.throttle.keys_of(CTR["id"]) <= 11 and svc.throttle.keys_of(other["id"]) == 1
        assert svc.stats.get("alerts_suppressed_total", rule="Tool ran", reason="container_cap") == 500 - 10 - 2
    plain = [x for x in got if "suppressed" not in x and x["container"]["id"] == CTR["id"]]
    assert len(plain) == 12   # 10 keys, then 2 from the overflow key
    summary = [x for x in got if x.get("suppressed")][0]
    assert summary["suppressed"] == 488 and "throttle key cap" in summary["output"]
    assert "unique-499" in summary["output"]   # the last one is the evidence kept


async def test_kinds_no_rule_reads_are_not_decoded_until_a_reload_adds_one(nats_server, rules_file):
    fork_rule = ("\n- rule: Tool forked\n  desc: x\n  condition: evt.type = clone and proc.name = tool\n"
                 "  output: tool forked\n  priority: WARNING\n")
    fork = {**exec_ev(), "kind": "fork", "child_pid": 8, "clone_flags": 17}
    for k in ("filename", "argv", "ret"):
        del fork[k]
    async with client(nats_server.url) as (bus, got), \
            running(nats_server.url, rules=(rules_file,), reload_check_s=0, throttle_window_s=0) as svc:
        assert {"fork", "exit", "flow"} <= svc.skipped_kinds and "exec" not in svc.skipped_kinds
        assert "open" not in svc.skipped_kinds  # no rule on it, but the exec state reads it
        await bus.publish_batch(subjects.event("n1", "fork"), [fork, fork])
        await bus.publish(subjects.event("n1", "exit"), b"{not even JSON")  # skipped, so never found bad
        await bus.publish_batch(subjects.event("n1", "exec"), [exec_ev()])
        await until(lambda: len(got) == 1, what="the exec's alert")
        assert svc.stats.total("bus_skipped_messages_total") == 2
        assert svc.stats.total("events_evaluated_total") == 1 and svc.stats.total("bus_malformed_total") == 0
        rules_file.write_text(TEST_RULES + fork_rule)
        assert (await bus.request_json(subjects.CTL_ALERTER, {"op": "reload"}))["ok"]
        assert "fork" not in svc.skipped_kinds and "exit" in svc.skipped_kinds
        await bus.publish_batch(subjects.event("n1", "fork"), [fork])
        await until(lambda: len(got) == 2, what="the fork's alert after the reload")
        assert got[1]["rule"] == "Tool forked" and svc.stats.total("bus_skipped_messages_total") == 2
