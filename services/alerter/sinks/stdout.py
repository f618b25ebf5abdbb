"""Alerts as JSON lines on standard output (written from a thread)."""
from __future__ import annotations

import asyncio
import sys

import orjson

from shared import terminal

from .base import Sink


def json_lines(alerts: list[dict]) -> bytes:
    """JSON lines; DEL, C1 and format characters (which JSON leaves raw) escaped for terminals."""
    data = b"".join(orjson.dumps(a, option=orjson.OPT_APPEND_NEWLINE) for a in alerts)
    return data if data.isascii() else terminal.json_line(data.decode()).encode()


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, stats, queue_size: int = 10_000, stream=None) -> None:
        super().__init__(stats, queue_size)
        self.stream = stream  # a binary stream; default sys.stdout.buffer

    def _write(self, data: bytes) -> None:
        out = self.stream or sys.stdout.buffer
        out.write(data)
        out.flush()

    async def deliver(self, alerts: list[dict]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, json_lines(alerts))
