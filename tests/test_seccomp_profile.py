"""Seccomp profile builder, syscall table, container matching and CLI errors (no BPF)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from services.seccomp import syscall_names
from services.seccomp.generate import GenerateOptions
from services.seccomp.profile import BASELINE, build_profile, unknown_numbers
from services.seccomp.profile import syscall_names as names_of
from services.seccomp.resolve import ResolveError, match_table
from shared.config import ConfigError
from shared.natsserver import free_port
from tests.conftest import ROOT


def test_name_table_knows_x86_64_numbers():
    assert syscall_names.name(0) == "read"
    assert syscall_names.name(1) == "write"
    assert syscall_names.name(59) == "execve"
    assert syscall_names.name(231) == "exit_group"
    assert syscall_names.name(435) == "clone3"
    assert syscall_names.name(439) == "faccessat2"
    assert syscall_names.name(335) is None  # the hole between 334 and 424
    assert syscall_names.number("openat") == 257
    assert syscall_names.number("no_such_call") is None
    # one name per number and back
    assert all(syscall_names.number(n) == nr for nr, n in syscall_names.NAMES.items())
    assert max(syscall_names.NAMES) < 512  # fits the BPF bitmap (bpf/syscalls.bpf.c SC_MAX_SYSCALLS)


def test_profile_shape_and_sorted_names():
    prof = build_profile([59, 0, 231, 0, 1], baseline=())
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    assert prof["defaultErrnoRet"] == 1
    assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert prof["syscalls"] == [{"names": ["execve", "exit_group", "read", "write"], "action": "SCMP_ACT_ALLOW"}]


def test_baseline_is_added_and_valid():
    names = names_of([0])
    assert set(BASELINE) <= set(names) and "read" in names
    assert {"execve", "exit_group", "futex", "rt_sigreturn"} <= set(BASELINE)
    with pytest.raises(ValueError, match="not_a_syscall"):
        names_of([0], baseline=("not_a_syscall",))


def test_unknown_numbers_are_left_out_and_reported():
    prof = build_profile([0, 500, 335], baseline=())
    assert prof["syscalls"][0]["names"] == ["read"]
    assert unknown_numbers([0, 500, 335, 500]) == [335, 500]


TABLE = [
    {"id": "a" * 64, "name": "web", "cgroup_id": 101, "cgroup_ids": [101, 111, "x", 1]},
    {"id": "ab" + "c" * 62, "name": "/db", "cgroup_id": 102},
    {"id": "f" * 64, "name": "nocg", "cgroup_id": None},
    "garbage",
]


def test_match_table_by_name_and_id_prefix():
    assert match_table("web", TABLE).cgroup_id == 101
    assert match_table("web", TABLE).cgroup_ids == (101, 111)  # nested cgroups too; junk dropped
    assert match_table("db", TABLE).cgroup_ids == (102,)
    assert match_table("db", TABLE).cgroup_id == 102  # docker's leading slash
    assert match_table("abc", TABLE).cgroup_id == 102
    assert match_table("nocg", TABLE) is None  # no cgroup: not usable
    assert match_table("zzz", TABLE) is None
    with pytest.raises(ResolveError, match="ambiguous"):
        match_table("a", TABLE)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="container"):
        GenerateOptions(container=" ")
    with pytest.raises(ConfigError, match="timeout"):
        GenerateOptions(container="x", timeout=0)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_without_nats_says_so():
    r = _cli("--nats", f"nats://127.0.0.1:{free_port()}", "seccomp", "whatever", "--timeout", "1")
    assert r.returncode == 1
    assert "NATS not reachable" in r.stderr and "Traceback" not in r.stderr


async def test_cli_unknown_container_says_so(nats_server):
    r = _cli("--nats", nats_server.url, "--node", "sc-unit", "seccomp", "no-such-container-0f3a", "--timeout", "1")
    assert r.returncode == 1
    assert "unknown container 'no-such-container-0f3a'" in r.stderr and "Traceback" not in r.stderr


async def test_cli_uses_enricher_table_and_survives_a_broken_one(nats_server):
    """The enricher's table resolves names (then the absent probe is named);
    a garbage reply from it is logged and the local look-up carries on."""
    import asyncio

    import nats
    import orjson

    from shared import subjects

    nc = await nats.connect(nats_server.url)
    replies = {"good": orjson.dumps({"containers": [{"id": "ab" * 32, "name": "fake-ctr", "cgroup_id": 4242}]}),
               "bad": b"\x00not json"}

    def enricher(reply: bytes):
        async def cb(msg):
            await msg.respond(reply)
        return cb

    for node, reply in replies.items():
        await nc.subscribe(subjects.ctl_enricher(f"sc-{node}"), cb=enricher(reply))
    await nc.flush()
    try:
        r = await asyncio.to_thread(_cli, "--nats", nats_server.url, "--node", "sc-good", "seccomp", "fake-ctr",
                                    "--timeout", "1")
        assert r.returncode == 1 and "probe on node 'sc-good' not reachable" in r.stderr, r.stderr
        r = await asyncio.to_thread(_cli, "--nats", nats_server.url, "--node", "sc-bad", "seccomp", "fake-ctr",
                                    "--timeout", "1")
        assert r.returncode == 1 and "unknown container 'fake-ctr'" in r.stderr, r.stderr
        assert "enricher look-up failed" in r.stderr and "Traceback" not in r.stderr
    finally:
        await nc.close()
