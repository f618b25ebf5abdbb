"""The control protocol every service speaks: request/reply on its control subject.

A request is a JSON object with a string "op" and that op's arguments; the
reply is a JSON object: the op's result, or on refusal
`{"ok": false, "error": "<what and why>", "code": "<code>"}`.

    control = Control("probe", stats)
    control.op("status", self._status)          # handler(req) -> dict (or an awaitable of one)
    await control.serve(bus, subjects.ctl_probe(node))

Handlers refuse with `raise ControlError("bad_args", "...")`. An op that
takes seconds (a profile) is registered with `background=True`: it is
answered from its own task (at most MAX_BACKGROUND at once, refused with
"busy" beyond), so other requests are not held up. Every service counts
`ctl_requests_total{op}` and `ctl_errors_total{code}` the same way.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from . import log
from .tasks import cancel_and_wait

if TYPE_CHECKING:
    from .bus import Bus
    from .stats import Stats

Handler = Callable[[dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]
_log = log.get("control")

# error codes
BAD_REQUEST = "bad_request"   # not a JSON object with a string "op"
UNKNOWN_OP = "unknown_op"
BAD_ARGS = "bad_args"         # the op's arguments are wrong
UNAVAILABLE = "unavailable"   # the op cannot be served here now (a feature off or missing)
FAILED = "failed"             # the handler failed
BUSY = "busy"                 # too many background ops running
MAX_BACKGROUND = 8


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "code": code}


class Control:
    """The ops of one service and their dispatch."""

    def __init__(self, service: str, stats: "Stats") -> None:
        self.service, self.stats = service, stats
        self._ops: dict[str, Handler] = {}
        self._background: set[str] = set()
        self.tasks: set[asyncio.Task[Any]] = set()   # background ops in flight (cancel with `cancel()`)

    def op(self, name: str, handler: Handler, background: bool = False) -> None:
        self._ops[name] = handler
        if background:
            self._background.add(name)

    async def cancel(self) -> None:
        """Stop background ops still running (at service shutdown)."""
        await cancel_and_wait(*self.tasks)

    @property
    def ops(self) -> list[str]:
        return list(self._ops)

    def refuse(self, code: str, message: str) -> dict[str, Any]:
        """Count and log a refusal; the error reply."""
        self.stats.inc("ctl_errors_total", code=code)
        _log.warning("%s control request refused (%s): %s", self.service, code, message)
        return error_reply(code, message)

    async def handle(self, data: bytes) -> dict[str, Any]:
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            return self.refuse(BAD_REQUEST, f"request is not JSON: {e}")
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return self.refuse(BAD_REQUEST, 'request must be a JSON object with a string "op"')
        op = req["op"]
        handler = self._ops.get(op)
        if handler is None:
            return self.refuse(UNKNOWN_OP, f"unknown op {op[:64]!r} for the {self.service}; "
                                           f"known: {', '.join(self._ops)}")
        self.stats.inc("ctl_requests_total", op=op)
        try:
            reply = handler(req)
            if inspect.isawaitable(reply):
                reply = await reply
        except ControlError as e:
            return self.refuse(e.code, f'op "{op}": {e}')
        except Exception as e:
            _log.exception("%s control op %r failed", self.service, op)
            return self.refuse(FAILED, f'op "{op}" failed: {type(e).__name__}: {e}')
        return reply

    def _is_background(self, data: bytes) -> bool:
        if not self._background:
            return False
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        return isinstance(req, dict) and req.get("op") in self._background

    async def serve(self, bus: "Bus", subject: str, queue: str = "") -> None:
        async def answer(msg: Any) -> None:
            reply = await self.handle(msg.data)
            if msg.reply:
                try:
                    await msg.respond(orjson.dumps(reply, default=str))
                except Exception as e:  # the requester or the connection went away
                    _log.warning("%s could not answer on %s: %s", self.service, msg.subject, e)

        async def on_msg(msg: Any) -> None:
            if not self._is_background(msg.data):
                await answer(msg)
            elif len(self.tasks) >= MAX_BACKGROUND:
                if msg.reply:
                    await msg.respond(orjson.dumps(self.refuse(BUSY, f"{MAX_BACKGROUND} long requests running")))
            else:
                task = asyncio.create_task(answer(msg), name=f"{self.service}-ctl")
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        await bus.subscribe_raw(subject, on_msg, queue=queue)


async def request(bus: "Bus", subject: str, op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one op; the reply, or ControlError when the service refused it."""
    reply = await bus.request_json(subject, {"op": op, **args}, timeout=timeout)
    if not isinstance(reply, dict):
        raise ControlError(BAD_REQUEST, f"reply on {subject} is not a JSON object")
    if reply.get("ok") is False or "error" in reply:
        raise ControlError(str(reply.get("code") or FAILED), str(reply.get("error")))
    return reply
