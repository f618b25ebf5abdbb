"""Alerts appended to a file as JSON lines (written from a thread)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from .base import Sink
from .stdout import json_lines


class FileSink(Sink):
    name = "file"

    def __init__(self, path: Path, stats, queue_size: int = 10_000) -> None:
        super().__init__(stats, queue_size)
        self.path = Path(path)
        self._f = None

    def _write(self, data: bytes) -> None:
        if self._f is None:  # (re)open lazily: a failed write reopens next time
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab")
        try:
            self._f.write(data)
            self._f.flush()
        except OSError:
            self._close()
            raise

    def _close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None

    async def deliver(self, alerts: list[dict]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, json_lines(alerts))

    async def close(self) -> None:
        self._close()
