"""Supervisor parts that `eunomia up` relies on, with real processes."""
import asyncio

import pytest

from services.supervisor.config import SupervisorConfig
from services.supervisor.runtime_api import PodmanApi, answers
from shared.config import ConfigError


@pytest.mark.podman
async def test_podman_api_is_started_when_no_runtime_answers_and_stopped_after(tmp_path, bb_image):
    sock = str(tmp_path / "podman.sock")
    assert not await answers(sock)
    async with PodmanApi(sock=sock, known=(sock,)) as api:
        assert api.pid and await answers(sock)
        # a second one sees the first answering and starts nothing
        async with PodmanApi(sock=sock, known=(sock,)) as again:
            assert again.pid is None
    await asyncio.sleep(0.2)
    assert api.proc.returncode is not None and not await answers(sock)


def test_supervisor_config_is_validated():
    with pytest.raises(ConfigError, match="services: unknown"):
        SupervisorConfig(services=("probe", "nope"))
    with pytest.raises(ConfigError, match="nats_port"):
        SupervisorConfig(nats_port=0)
