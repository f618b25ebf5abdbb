"""Generate a seccomp profile for one running container, over NATS.

Resolve the container to its cgroup id (enricher, else local podman/cgroupfs),
ask the node's probe for the syscalls recorded in that cgroup
(`eunomia.ctl.probe.<node>` op "syscalls"), build the profile.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats
import orjson
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared import busauth, log, subjects
from shared.config import CommonConfig, ConfigError

from .profile import BASELINE, build_profile, unknown_numbers
from .resolve import Container, ResolveError, match_table, resolve_locally

_log = log.get("seccomp")


class GenerateError(RuntimeError):
    """Why no profile could be made, in words for the user."""


@dataclass(frozen=True)
class GenerateOptions:
    container: str
    timeout: float = 5.0
    baseline: bool = True
    reset: bool = False  # forget the record after reading it

    def __post_init__(self) -> None:
        if not self.container or not self.container.strip():
            raise ConfigError("container: empty name or id")
        if not (0.1 <= self.timeout <= 300):
            raise ConfigError(f"timeout: {self.timeout} not in [0.1, 300] s")


@dataclass(frozen=True)
class Result:
    container: Container
    syscalls: list[int]
    unknown: list[int]
    profile: dict


async def _request(nc, subject: str, body: dict, timeout: float) -> dict | None:
    """JSON request/reply; None when nobody answers."""
    try:
        msg = await nc.request(subject, orjson.dumps(body), timeout=timeout)
    except (NoRespondersError, NatsTimeout, asyncio.TimeoutError):
        return None
    try:
        reply = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        raise GenerateError(f"{subject}: reply is not JSON ({len(msg.data)} bytes)") from None
    if not isinstance(reply, dict):
        raise GenerateError(f"{subject}: reply is not a JSON object")
    return reply


async def _resolve(nc, common: CommonConfig, opts: GenerateOptions) -> Container:
    """The enricher's table first (any node-local runtime it knows), then this machine's own view."""
    try:
        reply = await _request(nc, subjects.ctl_enricher(common.node), {"op": "containers"}, min(opts.timeout, 2.0))
        if reply and isinstance(reply.get("containers"), list):
            found = match_table(opts.container, reply["containers"])
            if found:
                return found
    except ResolveError as e:  # ambiguous: a local look-up would not do better
        raise GenerateError(str(e)) from None
    except GenerateError as e:  # a broken enricher reply: say so, carry on locally
        _log.warning("enricher look-up failed, resolving locally: %s", e)
    try:
        return await asyncio.to_thread(resolve_locally, opts.container)
    except ResolveError as e:
        raise GenerateError(str(e)) from None


async def _syscalls(nc, subject: str, node: str, cgroup_id: int, timeout: float) -> list[int]:
    reply = await _request(nc, subject, {"op": "syscalls", "cgroup_id": cgroup_id}, timeout)
    if reply is None:
        raise GenerateError(f"probe on node {node!r} not reachable: no reply on {subject} within {timeout:g} s")
    if "error" in reply:
        raise GenerateError(f"probe on node {node!r}: {reply['error']}")
    nums = reply.get("syscalls")
    if not isinstance(nums, list) or not all(isinstance(n, int) for n in nums):
        raise GenerateError(f"probe on node {node!r}: reply has no list of syscall numbers")
    return nums


async def generate(common: CommonConfig, opts: GenerateOptions) -> Result:
    async def quiet(e: Exception) -> None:  # failures are reported once, below
        pass

    try:
        # max_reconnect_attempts=1: nats-py retries the first connect forever at 0 or -1
        nc = await asyncio.wait_for(
            nats.connect(servers=common.servers, name="eunomia-seccomp", allow_reconnect=False,
                         connect_timeout=min(opts.timeout, 5.0), max_reconnect_attempts=1,
                         reconnect_time_wait=0.2, error_cb=quiet,
                         **busauth.role_kwargs(common, busauth.ADMIN)),
            timeout=opts.timeout + 5)
    except Exception as e:
        raise GenerateError(f"NATS not reachable at {common.nats_url}: {str(e) or type(e).__name__}"
                            f"{busauth.hint(common, busauth.ADMIN)}") from None
    try:
        container = await _resolve(nc, common, opts)
        subject = subjects.ctl_probe(common.node)
        seen: set[int] = set()
        for cg in container.cgroup_ids:  # the union over the container's cgroups
            seen |= set(await _syscalls(nc, subject, common.node, cg, opts.timeout))
        nums = sorted(seen)
        if not nums:
            raise GenerateError(f"no syscalls recorded for container {opts.container!r} "
                                f"(cgroup {container.cgroup_id}): was the probe running on node "
                                f"{common.node!r} while it ran?")
        if opts.reset:
            for cg in container.cgroup_ids:
                await _request(nc, subject, {"op": "syscalls_reset", "cgroup_id": cg}, opts.timeout)
    finally:
        await nc.close()
    profile = build_profile(nums, BASELINE if opts.baseline else ())
    return Result(container, nums, unknown_numbers(nums), profile)

