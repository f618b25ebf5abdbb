"""Learns container cgroups the moment the runtime creates them (inotify).

A container that lives for milliseconds may have its cgroup removed before
its first event is enriched; then its inode can no longer be placed. The
runtime mkdirs the cgroup before the container's first process runs, so
watching the v2 tree for new directories records inode -> container in time.
Bounded: at most `max_watches` directories, `max_depth` levels deep.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import select
import struct
import threading

from shared import log
from shared.stats import Stats

from .cgroups import CgroupMatch, parse_path

_log = log.get("enricher.cgroup-watch")

IN_CREATE, IN_DELETE_SELF, IN_IGNORED, IN_Q_OVERFLOW, IN_ISDIR = 0x100, 0x400, 0x8000, 0x4000, 0x40000000
IN_ONLYDIR = 0x01000000
_EVENT = struct.Struct("iIII")


class CgroupWatcher:
    """Async context manager; calls `on_container(inode, match)` (in the event loop) for each new
    container cgroup.

    The inotify descriptor is read by a thread of its own, which stats each new directory at
    once: the event loop may be busy with a large batch while a container lives and goes, and a
    directory gone before it is stat'ed can never be placed. What the thread finds reaches the
    loop through a queue, delivered soon after, or at once by `poll()` (the resolver calls it
    before it gives an unknown cgroup id up)."""

    def __init__(self, root: str | None, on_container, stats: Stats, max_watches: int = 4096,
                 max_depth: int = 6) -> None:
        self.root, self.on_container, self.stats = root, on_container, stats
        self.max_watches, self.max_depth = max_watches, max_depth
        self._fd = -1
        self._paths: dict[int, str] = {}   # watch descriptor -> directory (the thread's, after start)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._found_q: queue.SimpleQueue[tuple[int, CgroupMatch] | str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> "CgroupWatcher":
        if not self.root:
            return self
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            _log.warning("inotify unavailable (errno %d): short-lived containers may show as host",
                         ctypes.get_errno())
            return self
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._watch_tree, self.root, 0)
        await asyncio.to_thread(self.poll)  # off the loop: the start-up walk's containers are not looked up yet
        self._thread = threading.Thread(target=self._read_loop, name="enricher-cgroup-watch", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, 2)
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def poll(self) -> None:
        """Deliver what the thread has found so far (in the event loop's thread)."""
        while True:
            try:
                item = self._found_q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, str):
                self.stats.inc(item)
                continue
            self.stats.inc("enricher_cgroups_watched_total")
            self.on_container(*item)
        self.stats.set("enricher_cgroup_watches", len(self._paths))

    def _depth(self, path: str) -> int:
        return path[len(self.root):].count("/")

    def _watch(self, path: str) -> bool:
        if len(self._paths) >= self.max_watches:
            self._found_q.put("enricher_cgroup_watch_refused_total")
            return False
        wd = self._libc.inotify_add_watch(self._fd, path.encode(), IN_CREATE | IN_DELETE_SELF | IN_ONLYDIR)
        if wd < 0:
            return False
        self._paths[wd] = path
        return True

    def _watch_tree(self, path: str, depth: int) -> None:
        """Watch `path` and its subdirectories; report containers found on the way
        (covers directories created before their parent's watch existed)."""
        if not self._watch(path):
            return
        try:
            entries = [e for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for e in entries:
            self._found(e.path)
            if depth + 1 < self.max_depth:
                self._watch_tree(e.path, depth + 1)

    def _found(self, path: str) -> None:
        m = parse_path(path[len(self.root):])
        if m is None:
            return
        try:
            ino = os.stat(path).st_ino
        except OSError:
            self._found_q.put("enricher_cgroup_watch_gone_total")  # removed before we could stat it
            return
        self._found_q.put((ino, m))

    def _read_loop(self) -> None:
        p = select.poll()
        p.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not p.poll(200):
                continue
            before = self._found_q.qsize()
            self._read_events()
            if self._found_q.qsize() != before and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self.poll)
                except RuntimeError:  # the loop is closing
                    return

    def _read_events(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError as e:
            _log.warning("inotify read failed: %s", e)
            return
        i = 0
        while i + _EVENT.size <= len(data):
            wd, mask, _cookie, ln = _EVENT.unpack_from(data, i)
            name = data[i + _EVENT.size:i + _EVENT.size + ln].split(b"\0", 1)[0].decode(errors="replace")
            i += _EVENT.size + ln
            if mask & IN_Q_OVERFLOW:
                self._found_q.put("enricher_cgroup_watch_overflows_total")  # the periodic rescan catches up
                continue
            if mask & (IN_IGNORED | IN_DELETE_SELF):
                self._paths.pop(wd, None)
                continue
            parent = self._paths.get(wd)
            if parent is None or not (mask & IN_CREATE and mask & IN_ISDIR):
                continue
            path = f"{parent}/{name}"
            self._found(path)
            if self._depth(path) < self.max_depth:
                self._watch_tree(path, self._depth(path))
