"""Fixtures with real parts: nats-server processes, podman containers."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.natsserver import NatsServer, NatsServerConfig, free_port  # noqa: E402
from tests import containers  # noqa: E402


def is_root() -> bool:
    return os.geteuid() == 0


# The podman Engine API lives at one path (/run/podman/podman.sock) that tests and `eunomia up`
# find by default, so with parallel workers (pytest-xdist, `make test`) the controlling process
# starts it once before the workers and stops it after them; no worker stops it under another.
_SHARED_PODMAN = "EUNOMIA_TEST_SHARED_PODMAN"


def pytest_configure(config):
    if hasattr(config, "workerinput") or not shutil.which("podman") or not is_root():
        return
    if getattr(config.option, "numprocesses", None):
        containers.build_busybox_image()
        config._eunomia_podman = containers.start_api_service()
        os.environ[_SHARED_PODMAN] = "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_timeout_set_timer(item, settings):
    """On a timeout, print the stack of every asyncio task of the test's loop before pytest-timeout
    prints the threads': a hung await shows where it waits (threads alone show the loop in select)."""
    yield
    handler = signal.getsignal(signal.SIGALRM)
    if not callable(handler):
        return

    def dump_tasks_then(signum, frame):
        loop = asyncio._get_running_loop()
        if loop is not None:
            print(f"+++ asyncio tasks at timeout ({item.nodeid}) +++")
            for task in asyncio.all_tasks(loop):
                task.print_stack(file=sys.stdout)
        handler(signum, frame)

    signal.signal(signal.SIGALRM, dump_tasks_then)


def pytest_collection_modifyitems(config, items):
    """Tests marked `longest` first: with parallel workers one of them starts on it at once
    while the others share the rest, so the run ends when the longest test does."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("longest") else 1)


def pytest_unconfigure(config):
    proc = getattr(config, "_eunomia_podman", None)
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
async def nats_server(tmp_path):
    """A real nats-server with JetStream on a free loopback port."""
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp_path / "js")) as srv:
        yield srv


@pytest.fixture(scope="session")
def bb_image():
    """The locally built busybox image (podman, runc)."""
    if not shutil.which("podman"):
        pytest.fail("podman is not installed: run `make bootstrap`")
    return containers.build_busybox_image()


@pytest.fixture(scope="session")
def podman_socket(bb_image):
    """Docker-compatible Engine API served by `podman system service`."""
    proc = containers.start_api_service()  # already there when shared (see pytest_configure)
    yield containers.PODMAN_SOCK
    if proc and not os.environ.get(_SHARED_PODMAN):
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def postgres():
    """A real throwaway PostgreSQL 15 server (tests/pg.py); `await postgres.new_database()` gives a URL."""
    from tests.pg import PgServer

    srv = PgServer().start()
    yield srv
    srv.stop()
