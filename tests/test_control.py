"""shared/control.py over a real nats-server: one protocol, one way of refusing and counting."""
import asyncio

import orjson
import pytest

from shared import bus as busmod
from shared.control import BAD_ARGS, Control, ControlError, request
from shared.stats import Stats


async def test_ops_replies_refusals_and_counters(nats_server):
    stats = Stats("t")
    c = Control("thing", stats)

    def echo(req):
        if not isinstance(req.get("n"), int):
            raise ControlError(BAD_ARGS, '"n" must be an integer')
        return {"n": req["n"] + 1}

    async def slow(req):
        await asyncio.sleep(0)
        return {"slow": True}

    c.op("echo", echo)
    c.op("slow", slow)
    c.op("boom", lambda req: 1 / 0)
    async with busmod.connect(nats_server.url, Stats("client")) as bus:
        await c.serve(bus, "eunomia.ctl.thing.n1")
        assert await request(bus, "eunomia.ctl.thing.n1", "echo", n=1) == {"n": 2}
        assert await request(bus, "eunomia.ctl.thing.n1", "slow") == {"slow": True}
        with pytest.raises(ControlError) as e:
            await request(bus, "eunomia.ctl.thing.n1", "echo", n="x")
        assert e.value.code == "bad_args" and '"n" must be an integer' in str(e.value)
        with pytest.raises(ControlError) as e:
            await request(bus, "eunomia.ctl.thing.n1", "nope")
        assert e.value.code == "unknown_op" and "known: echo, slow, boom" in str(e.value)
        with pytest.raises(ControlError) as e:
            await request(bus, "eunomia.ctl.thing.n1", "boom")
        assert e.value.code == "failed" and "ZeroDivisionError" in str(e.value)
        for raw in (b"{not json", b"[1, 2]", b'{"op": 5}', b""):
            reply = orjson.loads((await bus.nc.request("eunomia.ctl.thing.n1", raw, timeout=5)).data)
            assert reply["ok"] is False and reply["code"] == "bad_request", raw
    assert stats.get("ctl_requests_total", op="echo") == 2
    assert stats.total("ctl_errors_total") == 7 and stats.get("ctl_errors_total", code="bad_request") == 4
