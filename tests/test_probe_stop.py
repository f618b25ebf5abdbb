"""A probe's stop closes each of its descriptors once (services/probe/detach.py, ia32_exit.py).

A descriptor closed a second time is either EBADF or, worse, a number the process has handed
to something else meanwhile (another service's socket, the event loop's own pipe): seen as a
BPF program descriptor of a later probe found closed, and a test's event loop hanging in its
teardown. Real BPF: the ia32 exit program and the syscall latency programs attached (links the
stop must close), every close during the stop recorded.
"""
from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared.config import CommonConfig

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]


async def test_stop_closes_no_descriptor_twice(nats_server, tmp_path, monkeypatch):
    common = CommonConfig(nats_url=nats_server.url, node="stop-node", data_dir=tmp_path)
    svc = ProbeService(ProbeConfig(ia32_exit="always", perf=True, syscall_latency=True), common)
    bad: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        try:
            real_close(fd)
        except OSError as e:
            if e.errno == errno.EBADF:
                bad.append(fd)
            raise

    stop = asyncio.Event()
    async with svc:
        assert svc.ia32_exit is not None and svc.ia32_exit.attached and svc._latency_links, \
            "the links this test is about were not made"
        task = asyncio.create_task(svc.run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await task
        monkeypatch.setattr(os, "close", close)
    for _ in range(200):  # the release thread is waited for by the stop only up to its bound
        if not any(t.name.startswith("bounded-") for t in threading.enumerate()):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the release thread was still running 20 s after the stop")
    assert not bad, f"descriptors closed twice on stop: {bad}"


def _bpf_fds() -> set[int]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:bpf"):
                out.add(int(fd))
        except OSError:
            pass
    return out


async def test_a_start_cancelled_while_the_kernel_is_configured_leaves_nothing_behind(nats_server, tmp_path):
    """The kernel is configured in a worker thread (the ia32 programs' verification takes seconds):
    a start cancelled meanwhile waits for that thread before releasing the BPF module, so no program
    is loaded or attached into a module already torn down (ia32 exit "always": attached on raw
    sys_exit, it would run on every syscall of the node)."""
    before = _bpf_fds()
    svc = ProbeService(ProbeConfig(ia32_exit="always"), CommonConfig(nats_url=nats_server.url, node="cancel-node",
                                                                      data_dir=tmp_path))
    configuring = threading.Event()
    real = svc._configure_kernel

    def configure() -> None:
        configuring.set()
        real()
    svc._configure_kernel = configure  # type: ignore[method-assign]
    start = asyncio.create_task(svc.__aenter__())
    while not configuring.is_set():
        assert not start.done(), start.exception()
        await asyncio.sleep(0.01)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert svc.ia32_exit is not None, "the configuration the cancel came during did finish"
    assert svc.bpf is None and not svc.ia32_exit.links and svc.ia32_exit.prog_fd == -1
    for _ in range(200):  # the release thread closes the module's descriptors
        if not any(t.name.startswith("bounded-") for t in threading.enumerate()):
            break
        await asyncio.sleep(0.1)
    assert _bpf_fds() <= before, "BPF descriptors left open by the cancelled start"
