"""The probe with real BPF in the kernel, a real nats-server and real
processes and containers: what they do must arrive as raw events on the bus.

One probe is loaded for the whole module (compiling takes seconds). Other
tests may run at the same time, so every assertion filters by our own child
pids or container cgroup.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from services.probe import loader
from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared import bus as busmod
from shared import subjects
from shared.config import CommonConfig, ConfigError
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from shared.stats import Stats
from tests import containers, pipeline

pytestmark = [pytest.mark.bpf, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]

NODE = f"probe{uuid.uuid4().hex[:6]}"

# One child process doing many things we must see, each once.
ACTIONS = r'''
import ctypes, os, socket, sys, time
d = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

fd = os.open(f"{d}/created", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640); os.close(fd)
os.rename(f"{d}/created", f"{d}/renamed")
os.chmod(f"{d}/renamed", 0o600)
os.symlink(f"{d}/renamed", f"{d}/sym")
os.link(f"{d}/renamed", f"{d}/hard")
os.unlink(f"{d}/hard")
os.close(os.memfd_create("eun-memfd", 0))
socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()

srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
cli = socket.create_connection(("127.0.0.1", port))
conn, peer = srv.accept()
srv6 = socket.socket(socket.AF_INET6); srv6.bind(("::1", 0)); srv6.listen(1)
port6 = srv6.getsockname()[1]
cli6 = socket.create_connection(("::1", port6)); srv6.accept()[0].close(); cli6.close()
print(port, peer[1], port6, flush=True)
os.setresuid(0, 0, 0)
os.setgid(0)

# capset of the capabilities we have (version 3 header), setns into our own uts namespace
hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
caps = (ctypes.c_uint32 * 6)()
libc.capget(hdr, caps); libc.capset(hdr, caps)
ns = os.open("/proc/self/ns/uts", os.O_RDONLY); libc.setns(ns, 0x04000000); os.close(ns)  # CLONE_NEWUTS

# bpf(): BPF_MAP_CREATE (cmd 0), then BPF_PROG_LOAD (cmd 5) of "r0 = 0; exit" as a socket filter (type 1)
attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)  # array map: key 4, value 4, 1 entry
libc.syscall(321, 0, ctypes.byref(attr), 128)
insns = (ctypes.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)
lic = ctypes.create_string_buffer(b"GPL")
pattr = (ctypes.c_uint8 * 128)()
ctypes.memmove(pattr, (ctypes.c_uint32 * 2)(1, 2), 8)
ctypes.memmove(ctypes.byref(pattr, 8), (ctypes.c_uint64 * 2)(ctypes.addressof(insns), ctypes.addressof(lic)), 16)
libc.syscall(321, 5, pattr, 128)

# ptrace: attach to a child of ours (PTRACE_ATTACH = 16), then detach (17)
kid = os.fork()
if kid == 0:
    time.sleep(5); os._exit(0)
libc.ptrace(16, kid, 0, 0); os.waitpid(kid, 0); libc.ptrace(17, kid, 0, 0)
os.kill(kid, 9); os.waitpid(kid, 0)

# kernel modules: attempts with no module at all (both fail; the attempt is the event)
libc.syscall(175, None, 0, b"eun-params")       # init_module
libc.syscall(313, -1, b"eun-fparams", 0)        # finit_module
try:
    os.execv(f"{d}/no-such-binary", ["no-such-binary", "--flag"])
except FileNotFoundError:
    pass

# a socket's fd number, closed and then taken by a file: a dup of it onto stderr is no socket
gone = socket.socket(); n = gone.fileno(); gone.close()
f = os.open("/dev/null", os.O_RDONLY)
assert f == n, (f, n)
saved = os.dup(2); os.dup2(f, 2); os.dup2(saved, 2); os.close(saved); os.close(f)

# nc -e shape: a forked child puts the parent's socket on its stderr
kid = os.fork()
if kid == 0:
    os.dup2(cli.fileno(), 2); os._exit(0)
os.waitpid(kid, 0)

# the accepted end, dup'ed onto a high fd: a socket too, known as accepted
os.dup2(conn.fileno(), 9)

# reverse shell shape: stdin and stdout become the connected socket
os.dup2(cli.fileno(), 0)
os.dup2(cli.fileno(), 1)
os._exit(7)
'''


class Collector(pipeline.Collector):
    """The raw subject's batches (each event judged once by a wait: a busy node sends tens of thousands)."""

    async def handler(self, subject: str, events: list[dict]) -> None:
        assert subject == subjects.raw(NODE)
        await self.add(subject, events)

    @property
    def events(self) -> list[dict]:
        return list(self.items)

    async def wait(self, pred, n: int = 1, timeout: float = 20.0) -> list[dict]:
        """The first `n` events matching `pred`."""
        try:
            return await self.wait_for_all(pred, n, timeout)
        except TimeoutError as e:
            raise AssertionError(str(e)) from None


class Probe:
    def __init__(self, svc: ProbeService, bus: busmod.Bus, col: Collector) -> None:
        self.svc, self.bus, self.col = svc, bus, col


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(tmp_path_factory):
    js = tmp_path_factory.mktemp("js")
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=js)) as srv:
        common = CommonConfig(nats_url=srv.url, node=NODE, data_dir=js, stats_interval=0.5)
        col = Collector()
        async with busmod.connect(srv.url, Stats("test")) as bus:
            await bus.subscribe_batches(subjects.raw(NODE), col.handler)
            await bus.nc.flush()
            # module events need the raw_syscalls fallback on this kernel (no module tracepoints)
            svc = ProbeService(ProbeConfig(counters_interval=0.5, syscall_profiles=True, module_fallback="on",
                                           ia32_exit="always"), common)  # ia32 results compared below
            stop = asyncio.Event()
            async with svc:
                task = asyncio.create_task(svc.run(stop))
                yield Probe(svc, bus, col)
                stop.set()
                await task


async def run_child(*argv: str) -> asyncio.subprocess.Process:
    p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    p.out, p.err = out.decode(), err.decode()
    return p


async def test_actions_of_a_child_process_arrive_as_raw_events(probe, tmp_path):
    script = tmp_path / "actions.py"
    script.write_text(ACTIONS)
    p = await run_child(sys.executable, str(script), str(tmp_path))
    assert p.returncode == 7, p.err
    port, peer_port, port6 = map(int, p.out.split())
    col, pid, d = probe.col, p.pid, str(tmp_path)

    def of(kind, **want):
        return lambda e: e["kind"] == kind and e["pid"] == pid and all(e.get(k) == v for k, v in want.items())

    ex = (await col.wait(of("exec", ret=0)))[0]
    assert ex["argv"] == [sys.executable, str(script), d] and ex["ret"] == 0
    assert ex["filename"] == sys.executable and ex["ppid"] == os.getpid()
    assert isinstance(ex["cgroup_id"], int) and ex["uid"] == 0 and ex["tid"] == pid
    assert abs(ex["ts"] - __import__("time").time_ns()) < 60e9  # wall clock, not boot time

    bad = (await col.wait(of("exec", ret=-2)))[0]  # failed execs are reported too
    assert bad["filename"] == f"{d}/no-such-binary" and bad["argv"] == ["no-such-binary", "--flag"]

    op = (await col.wait(of("open", path=f"{d}/created")))[0]
    assert op["flags"] & 0o3 == os.O_WRONLY and op["flags"] & os.O_CREAT and op["flags"] & os.O_TRUNC
    assert op["mode"] == 0o640 and op["ret"] >= 0
    await col.wait(of("rename", oldpath=f"{d}/created", newpath=f"{d}/renamed", ret=0))
    await col.wait(of("chmod", path=f"{d}/renamed", mode=0o600, ret=0))
    await col.wait(of("symlink", target=f"{d}/renamed", path=f"{d}/sym", ret=0))
    await col.wait(of("link", oldpath=f"{d}/renamed", newpath=f"{d}/hard", ret=0))
    await col.wait(of("unlink", path=f"{d}/hard", ret=0))
    mfd = (await col.wait(of("memfd", name="eun-memfd")))[0]
    assert mfd["ret"] >= 0
    pk = (await col.wait(of("socket", family=socket.AF_PACKET)))[0]
    assert pk["type"] & 0xF == socket.SOCK_RAW and pk["ret"] >= 0

    cn = (await col.wait(of("connect", dport=port)))[0]
    assert cn["family"] == socket.AF_INET and cn["daddr"] == "127.0.0.1" and cn["ret"] == 0
    assert cn["proto"] == "tcp"
    ls = (await col.wait(of("listen")))[0]
    assert ls["sport"] == port and ls["saddr"] == "127.0.0.1" and ls["ret"] == 0
    ac = (await col.wait(of("accept", dport=peer_port)))[0]
    assert ac["daddr"] == "127.0.0.1" and ac["sport"] == port and ac["ret"] >= 0 and ac["proto"] == "tcp"

    cn6 = (await col.wait(of("connect", dport=port6)))[0]
    assert (cn6["family"], cn6["daddr"], cn6["ret"]) == (socket.AF_INET6, "::1", 0)
    ls6 = (await col.wait(of("listen", sport=port6)))[0]
    assert ls6["saddr"] == "::1" and ls6["family"] == socket.AF_INET6

    su = (await col.wait(of("setuid", syscall="setresuid")))[0]
    assert (su["new_uid"], su["new_euid"], su["new_suid"], su["ret"], su["uid"]) == (0, 0, 0, 0, 0)
    sg = (await col.wait(of("setgid", syscall="setgid")))[0]
    assert sg["new_gid"] == 0 and sg["new_egid"] is None and sg["gid"] == 0

    assert (await col.wait(of("capset")))[0]["ret"] == 0
    sn = (await col.wait(of("setns")))[0]
    assert sn["nstype"] == 0x04000000 and sn["ret"] == 0 and sn["fd"] >= 0
    assert (await col.wait(of("bpf", cmd=0)))[0]["prog_type"] is None
    assert (await col.wait(of("bpf", cmd=5)))[0]["prog_type"] == 1

    init_m = (await col.wait(of("module", syscall="init_module")))[0]
    fin_m = (await col.wait(of("module", syscall="finit_module")))[0]
    assert init_m["params"] == "eun-params" and fin_m["params"] == "eun-fparams" and fin_m["fd"] in (-1, None)
    assert init_m["ret"] < 0 and fin_m["ret"] < 0

    pt = (await col.wait(of("ptrace", request=16)))[0]
    forks = await col.wait(of("fork"), n=2)
    assert pt["target_pid"] in [f["child_pid"] for f in forks] and pt["ret"] == 0
    sig = (await col.wait(of("signal", sig=9)))[0]
    assert sig["target_pid"] == pt["target_pid"]

    dups = await col.wait(lambda e: e["kind"] == "dup" and e["pid"] == pid and e["fd_type"] == "socket"
                          and e["newfd"] in (0, 1), n=2)
    assert all(e["syscall"] == "dup2" and e["sock_origin"] == "connected" for e in dups), dups
    acc_dup = (await col.wait(of("dup", newfd=9)))[0]
    assert acc_dup["fd_type"] == "socket" and acc_dup["sock_origin"] == "accepted"
    kid_dup = (await col.wait(lambda e: e["kind"] == "dup" and e["ppid"] == pid and e["newfd"] == 2))[0]
    assert kid_dup["fd_type"] == "socket"  # found through the parent's socket table
    # the closed socket's number reused by a file (no program runs on close: the socket is checked at dup)
    file_dups = await col.wait(lambda e: e["kind"] == "dup" and e["pid"] == pid and e["newfd"] == 2, n=2)
    assert [e["fd_type"] for e in file_dups] == ["other", "other"], file_dups
    ext = (await col.wait(of("exit")))[0]
    assert ext["exit_code"] == 7


# fork, then execve with argument strings in the binary's read-only data: in the child those
# pages are not mapped until touched, so they cannot be read at execve's entry.
FORK_EXEC_C = r"""
#include <sys/wait.h>
#include <unistd.h>
static void run(char *const *args) {
    pid_t p = fork();
    if (p == 0) { execve(args[0], args, 0); _exit(127); }
    waitpid(p, 0, 0);
}
int main(void) {
    static char *const args[] = {"/bin/echo", "rodata-arg-one", "two", 0};
    static char *const rel[] = {"./echo", "relative", 0};
    run(args);
    if (chdir("/bin") == 0)
        run(rel);
    return 0;
}
"""


async def test_exec_arguments_are_those_the_new_image_runs_with(probe, tmp_path):
    src, exe = tmp_path / "forkexec.c", tmp_path / "forkexec"
    src.write_text(FORK_EXEC_C)
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True, capture_output=True)
    p = await run_child(str(exe))
    assert p.returncode == 0 and p.out == "rodata-arg-one two\nrelative\n", p.err
    ex, rel = sorted(await probe.col.wait(lambda e: e["kind"] == "exec" and e["ppid"] == p.pid and e["ret"] == 0,
                                          n=2), key=lambda e: e["ts"])
    assert (ex["filename"], ex["argv"], ex["argv_truncated"]) == ("/bin/echo", ["/bin/echo", "rodata-arg-one", "two"],
                                                                   False)
    # the kernel's relative name, made absolute against the working directory
    assert (rel["filename"], rel["raw_filename"], rel["argv"]) == (os.path.realpath("/bin") + "/echo", "./echo",
                                                                   ["./echo", "relative"])
    long_arg = "x" * 3000  # past the argument area: cut, and said to be
    p = await run_child("/bin/echo", long_arg)
    ex = (await probe.col.wait(lambda e: e["kind"] == "exec" and e["pid"] == p.pid and e["ret"] == 0))[0]
    assert ex["argv"][0] == "/bin/echo" and long_arg.startswith(ex["argv"][1]) and ex["argv_truncated"]


# execve with (1) its environment array at the very end of a mapping: the probe reads the array's
# pointers in one go, which fails there, and must then read them one at a time; (2) a variable in a
# file-backed page never touched: BPF cannot fault it in, so the scan says it is incomplete.
EDGE_ENV_C = r"""
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
static void run(char *tag, char **envp) {
    char *argv[] = {"/bin/true", tag, 0};
    execve(argv[0], argv, envp);
    _exit(127);
}
int main(int argc, char **argv) {
    if (fork() == 0) {
        char *m = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(m + 4096, 4096);
        strcpy(m, "LD_PRELOAD=/tmp/edge.so");
        strcpy(m + 64, "A=1");
        char **envp = (char **)(m + 4096 - 3 * sizeof(char *));
        envp[0] = m + 64; envp[1] = m; envp[2] = 0;
        run("edge-env", envp);
    }
    wait(0);
    if (fork() == 0) {
        char *f = mmap(0, 4096, PROT_READ, MAP_PRIVATE, open(argv[1], O_RDONLY), 0);
        char *envp[] = {"A=1", f, 0};
        run("untouched-env", envp);
    }
    wait(0);
    return 0;
}
"""


async def test_an_environment_the_kernel_cannot_read_at_once_is_still_scanned_or_said_incomplete(probe, tmp_path):
    src, exe, var = tmp_path / "edgeenv.c", tmp_path / "edgeenv", tmp_path / "var"
    src.write_text(EDGE_ENV_C)
    var.write_bytes(b"LD_PRELOAD=/tmp/untouched.so\0")
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True, capture_output=True)
    p = await run_child(str(exe), str(var))
    assert p.returncode == 0, p.err
    col = probe.col
    execs = {e["argv"][1]: e for e in await col.wait(lambda e: e["kind"] == "exec" and e["ppid"] == p.pid, n=2)}
    edge, untouched = [(await col.wait(lambda e, pid=execs[tag]["pid"]: e["kind"] == "execenv" and e["pid"] == pid))[0]
                       for tag in ("edge-env", "untouched-env")]
    assert edge["env"] == {"LD_PRELOAD": "/tmp/edge.so"} and edge["env_scanned"] == 2, edge
    assert not edge["env_truncated"]
    assert untouched["env_truncated"] and untouched["env"] == {}, untouched


async def test_unshare_and_mount_in_a_private_mount_namespace(probe, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    p = await run_child("unshare", "-m", "--propagation", "private", "sh", "-c",
                        f"exec mount -t tmpfs eunomia-tmpfs {target}")
    assert p.returncode == 0, p.err
    col = probe.col
    un = (await col.wait(lambda e: e["kind"] == "unshare" and e["pid"] == p.pid))[0]
    assert un["flags"] & 0x00020000 and un["ret"] == 0  # CLONE_NEWNS
    mnt = (await col.wait(lambda e: e["kind"] == "mount" and e["target"] == str(target)))[0]
    assert (mnt["source"], mnt["fstype"], mnt["ret"]) == ("eunomia-tmpfs", "tmpfs", 0)
    assert mnt["pid"] == p.pid  # unshare exec'd sh, which exec'd mount: one process


async def test_container_events_carry_the_container_cgroup_id(probe, bb_image, tmp_path):
    name = f"eun-probe-{uuid.uuid4().hex[:8]}"
    try:
        # blocking podman calls in threads: the loop keeps taking the bus's messages meanwhile
        await asyncio.to_thread(containers.run, ["sh", "-c", "sleep 1; cat /etc/hostname; nc -w 1 169.254.169.254 80; "
                                                 "sleep 1"], name=name, detach=True, flags=["--network", "none"])
        cid = await asyncio.to_thread(containers.inspect_id, name)
        cg_dir = Path(f"/sys/fs/cgroup/unified/libpod_parent/libpod-{cid}")
        inode = cg_dir.stat().st_ino
        await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "wait", name], capture_output=True, timeout=60)
    finally:
        await asyncio.to_thread(containers.remove, name)
    col = probe.col
    ex = (await col.wait(lambda e: e["kind"] == "exec" and e["cgroup_id"] == inode
                         and e["argv"] == ["cat", "/etc/hostname"]))[0]
    assert ex["ret"] == 0  # busybox sh runs applets as /proc/self/exe: comm is "exe"
    await col.wait(lambda e: e["kind"] == "fork" and e["child_pid"] == ex["pid"] and e["cgroup_id"] == inode)
    await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == ex["pid"] and e["exit_code"] == 0)
    await col.wait(lambda e: e["kind"] == "open" and e["cgroup_id"] == inode and e["path"] == "/etc/hostname")
    cn = (await col.wait(lambda e: e["kind"] == "connect" and e["cgroup_id"] == inode))[0]
    assert (cn["daddr"], cn["dport"], cn["family"]) == ("169.254.169.254", 80, socket.AF_INET)
    assert cn["ret"] == -101  # ENETUNREACH: --network none, nothing left the machine
    probe.svc.read_counters()
    assert probe.svc.stats.get("probe_cgroup_events", cgroup_id=inode, **{"class": "exec"}) >= 2
    assert probe.svc.stats.get("probe_cgroup_events", cgroup_id=inode, **{"class": "file"}) >= 1
    assert probe.svc.stats.get("probe_cgroup_events", cgroup_id=1, **{"class": "exec"}) == 0  # host: none


async def test_exclusions_are_ours_alone_and_end_with_the_process(probe, tmp_path):
    svc, col = probe.svc, probe.col
    table = svc.bpf[b"excluded"]
    mine = tmp_path / "mine"
    mine.write_text("x")  # the probe's own process (this test runs in it) opens files
    assert os.getpid() in svc.excluded
    # A child announced as a service on the bus (what the old design trusted) is not hidden.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import sys; sys.stdin.readline(); open({str(tmp_path / 'svc')!r}, 'w'); "
        "sys.stdin.readline()", stdin=asyncio.subprocess.PIPE)
    snap = {"service": "store", "node": NODE, "pid": child.pid, "ts": 1, "counters": {}, "gauges": {}}
    await probe.bus.publish(subjects.stats("store", NODE), orjson.dumps(snap))
    await probe.bus.nc.flush()
    # nor does a control op name pids any more
    reply = await probe.bus.request_json(subjects.ctl_probe(NODE), {"op": "exclude", "pids": [child.pid]})
    assert "unknown op" in reply["error"]
    await asyncio.sleep(1.5)  # a few counter rounds (0.5 s): exclusions are refreshed there
    assert child.pid not in svc.excluded and table.get(table.Key(child.pid)) is None  # the kernel traces it
    child.stdin.write(b"go\n")
    await child.stdin.drain()
    await col.wait(lambda e: e["kind"] == "open" and e["path"] == str(tmp_path / "svc") and e["pid"] == child.pid,
                   timeout=60)
    # The probe's own children are excluded when asked (`eunomia up`: nats-server), while they live.
    svc.exclusions.children = True
    try:
        for _ in range(100):
            if child.pid in svc.excluded:
                break
            await asyncio.sleep(0.05)
        assert child.pid in svc.excluded and table.get(table.Key(child.pid)) is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        await child.wait()
        for _ in range(100):  # the pidfd reports the exit: the kernel entry goes at once
            if child.pid not in svc.excluded:
                break
            await asyncio.sleep(0.05)
        assert child.pid not in svc.excluded and table.get(table.Key(child.pid)) is None
        assert svc.stats.total("probe_exclusions_ended_total") >= 1
    finally:
        svc.exclusions.children = False
    # A service's own cgroup (systemd unit): its processes are excluded, others in a look-alike are not.
    from services.probe.exclusion import CGROUP_ROOT
    name = f"eunomia-test-{uuid.uuid4().hex[:6]}.service"
    unit, lookalike = CGROUP_ROOT / name, CGROUP_ROOT / (name + "-x")
    unit.mkdir()
    lookalike.mkdir()
    inside = await asyncio.create_subprocess_exec("sleep", "30")
    outside = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        (unit / "cgroup.procs").write_text(str(inside.pid))
        (lookalike / "cgroup.procs").write_text(str(outside.pid))
        svc.exclusions.cgroups = (name,)
        for _ in range(100):
            if inside.pid in svc.excluded:
                break
            await asyncio.sleep(0.05)
        assert inside.pid in svc.excluded and outside.pid not in svc.excluded
        inside.kill()
        await inside.wait()
        for _ in range(100):
            if inside.pid not in svc.excluded:
                break
            await asyncio.sleep(0.05)
        assert inside.pid not in svc.excluded
    finally:
        svc.exclusions.cgroups = ()
        for p in (inside, outside):
            if p.returncode is None:
                p.kill()
                await p.wait()
        for d in (unit, lookalike):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
    with pytest.raises(ConfigError, match="exclude_cgroups"):
        ProbeConfig(exclude_cgroups=("/",))
    # A later event from an unexcluded process proves the ring buffer was drained past our own opens.
    marker = await run_child("sh", "-c", "exit 0")
    await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == marker.pid)
    assert not [e for e in col.events if e["pid"] == os.getpid()]
    snap = svc.stats.snapshot(NODE)
    assert "probe_lost_events_total" in snap["counters"]
    assert svc.stats.total("probe_events_total") >= len(col.events)


PLAN_RULES = """
- rule: secret reads
  desc: t
  condition: evt.type = open and evt.is_open_read = true and fd.name startswith "{d}/secret/"
  output: x
  priority: WARNING
- rule: conf writes
  desc: t
  condition: evt.type = open and evt.is_open_write = true and fd.filename = target.conf
  output: x
  priority: WARNING
- rule: exact
  desc: t
  condition: evt.type in (open, chmod) and fd.name = "{d}/exact"
  output: x
  priority: WARNING
- rule: one-byte suffix
  desc: t
  condition: evt.type = open and evt.is_open_read = true and fd.name endswith "~"
  output: x
  priority: WARNING
"""


SCOPE_RULES = """
- rule: mkdir in containers
  desc: t
  condition: evt.type = mkdir and container.id != host and fd.name startswith {d}/
  output: x
  priority: WARNING
- rule: chmod anywhere
  desc: t
  condition: evt.type = chmod and fd.name startswith {d}/
  output: x
  priority: WARNING
"""


async def test_container_only_kinds_are_dropped_in_the_kernel_for_host_processes(probe, tmp_path):
    """mkdir is wanted from containers only: a host process's mkdir stays in the kernel (counted),
    the same mkdir from another mount namespace (what every container has) is sent; chmod,
    wanted anywhere, is sent from both."""
    from services.alerter.engine import load_rules_text
    from shared.filterplan import FilterPlan

    plan = load_rules_text(SCOPE_RULES.format(d=tmp_path)).filter_plan("test")
    assert plan.containers_only == {"mkdir"}
    probe.svc.read_counters()
    before = probe.svc.stats.get("probe_filtered_events_total", kind="mkdir") or 0
    probe.svc.load_plan(plan)
    try:
        act = f"import os; os.mkdir('{tmp_path}/' + os.sys.argv[1]); os.chmod('{tmp_path}/' + os.sys.argv[1], 0o700)"
        host = await run_child(sys.executable, "-c", act, "host")
        other = await run_child("unshare", "-m", sys.executable, "-c", act, "ns")
        assert host.returncode == 0 and other.returncode == 0, (host.err, other.err)
        col = probe.col
        for p in (host, other):
            await col.wait(lambda e, p=p: e["kind"] == "exit" and e["pid"] == p.pid)
        await col.wait(lambda e: e["kind"] == "mkdir" and e["path"] == f"{tmp_path}/ns")
        await col.wait(lambda e: e["kind"] == "chmod" and e["path"] == f"{tmp_path}/host")
        await col.wait(lambda e: e["kind"] == "chmod" and e["path"] == f"{tmp_path}/ns")
        probe.svc.read_counters()
    finally:
        probe.svc.load_plan(FilterPlan.capture_all(probe.svc.cfg.kinds))
    assert not [e for e in col.events if e["kind"] == "mkdir" and e["path"] == f"{tmp_path}/host"]
    assert (probe.svc.stats.get("probe_filtered_events_total", kind="mkdir") or 0) > before


async def test_filter_plan_emits_only_what_rules_can_match(probe):
    from services.alerter.engine import load_rules_text
    from shared.filterplan import FilterPlan

    d = Path(f"/tmp/eunplan-{uuid.uuid4().hex[:8]}")
    (d / "secret").mkdir(parents=True)
    for name in ("secret/a", "other", "target.conf", "exact", "backup~"):
        (d / name).write_text("x")
    plan = load_rules_text(PLAN_RULES.format(d=d)).filter_plan("test")
    assert "unlink" not in plan.kinds and "open" in plan.kinds
    filtered_before = probe.svc.stats.get("probe_filtered_events_total", kind="open") or 0
    probe.svc.load_plan(plan)
    try:
        p = await run_child(sys.executable, "-c", f"""
import os
os.chdir("{d}")
for path in ("{d}/secret/a", "{d}/other", "{d}/target.conf", "{d}/exact", "other", "{d}//other", "{d}/./other",
             "{d}/backup~"):
    open(path).read()
open("{d}/target.conf", "w").write("y")
open("target.conf", "a").write("y")   # relative: judged as {d}/target.conf (other flags: no repeat)
os.chmod("{d}/exact", 0o600)
os.chmod("{d}/other", 0o600)
os.unlink("{d}/other")
""")
        col = probe.col
        await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
        probe.svc.read_counters()
    finally:
        probe.svc.load_plan(FilterPlan.capture_all(probe.svc.cfg.kinds))
    # (a path the kernel cannot read at syscall entry, e.g. a library's constant not yet paged
    # in, is sent for user space to judge: only our own paths are compared here)
    opens = {(e["raw_path"], e["path"], e["flags"] & 3) for e in col.events
             if e["kind"] == "open" and e["pid"] == p.pid
             and (str(d) in e["raw_path"] or e["raw_path"] in ("other", "target.conf"))}
    # the relative "other" is {d}/other: not wanted; the relative "target.conf" written is
    assert opens == {(f"{d}/secret/a", f"{d}/secret/a", 0), (f"{d}/exact", f"{d}/exact", 0),
                     (f"{d}//other", f"{d}/other", 0), (f"{d}/./other", f"{d}/other", 0),
                     (f"{d}/target.conf", f"{d}/target.conf", 1), ("target.conf", f"{d}/target.conf", 1),
                     (f"{d}/backup~", f"{d}/backup~", 0)}
    chmods = [e["path"] for e in col.events if e["kind"] == "chmod" and e["pid"] == p.pid]
    assert chmods == [f"{d}/exact"]
    assert not [e for e in col.events if e["kind"] == "unlink" and e["pid"] == p.pid]
    # what was kept in the kernel is counted (by us and any other process on the node)
    assert probe.svc.stats.get("probe_filtered_events_total", kind="open") - filtered_before >= 2
    assert probe.svc.stats.get("probe_filtered_events_total", kind="unlink") >= 1
    for f in sorted(d.rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    d.rmdir()

async def test_open_plan_first_tests_two_bytes_then_the_trie(probe):
    """Opens are first judged by the two bytes after the path's '/' (bpf/file.bpf.c plan_open_head):
    a path whose pair no prefix or exact path starts is kept without the trie; one whose pair is
    wanted still goes through it; short patterns ("/t", "/") stand for every pair they can start."""
    from shared.filterplan import READ, WRITE, FilterPlan, Pattern

    d = Path(f"/tmp/eunhead-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    for name in ("exact", "other"):
        (d / name).write_text("x")
    plan = FilterPlan(kinds=tuple(probe.svc.cfg.kinds), patterns=(
        Pattern("open", "exact", f"{d}/exact", READ), Pattern("open", "prefix", "/t", WRITE),
        Pattern("open", "exact", "/", READ), Pattern("open", "prefix", "/proc/self/stat", READ)))
    probe.svc.load_plan(plan)
    try:
        p = await run_child(sys.executable, "-c", f"""
import os
for path in ("{d}/exact", "{d}/other", "/etc/hostname", "/proc/self/status", "/proc/self/statm", "/sys/kernel/mm"):
    os.close(os.open(path, os.O_RDONLY))
os.close(os.open("/", os.O_RDONLY))
open("{d}/w", "w").write("y")
""")
        col = probe.col
        await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
    finally:
        probe.svc.load_plan(FilterPlan.capture_all(probe.svc.cfg.kinds))
    opens = {(e["path"], e["flags"] & 3) for e in col.events if e["kind"] == "open" and e["pid"] == p.pid}
    ours = {o for o in opens if o[0].startswith((str(d), "/etc/", "/proc/self/", "/sys/")) or o[0] == "/"}
    assert ours == {(f"{d}/exact", 0), ("/proc/self/status", 0), ("/proc/self/statm", 0), ("/", 0),
                    (f"{d}/w", 1)}, opens
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


async def test_leading_dots_of_relative_paths_are_judged_in_the_kernel(probe):
    """A relative path's leading `./` and `../` (and a last `.` or `..`, as find, du and rm -r open
    to climb back) are folded into its base in the kernel (bpf/file.bpf.c path_absolute): the plan
    judges the folded path, so an uninteresting `..` stays in the kernel and `../../exact` is still
    the exact path a rule wants, across a mount and never above the root. `..x` is a name."""
    from shared.filterplan import READ, FilterPlan, Pattern

    d = Path(f"/tmp/eundots-{uuid.uuid4().hex[:8]}")
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "in" / "x").mkdir(parents=True)
    (d / "mnt").mkdir()
    (d / "a..").mkdir()
    for name in ("exact", "..hidden", "..z", "other", "a../f"):
        (d / name).write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "eundots", str(d / "mnt")], check=True)
    (d / "mnt" / "m").mkdir()
    plan = FilterPlan(kinds=tuple(probe.svc.cfg.kinds), patterns=(
        Pattern("open", "exact", f"{d}/exact", READ), Pattern("open", "exact", f"{d}/..hidden", READ),
        Pattern("open", "prefix", f"{d}/in", READ), Pattern("open", "exact", "/etc/hostname", READ)))
    probe.svc.load_plan(plan)
    probe.svc.read_counters()
    filtered_before = probe.svc.stats.get("probe_filtered_events_total", kind="open") or 0
    try:
        p = await run_child(sys.executable, "-c", f"""
import os
def opens(path, fd=None, flags=0):            # other flags: not a repeat of the same folded path
    os.close(os.open(path, os.O_RDONLY | flags, dir_fd=fd))
deeper = os.open("{d}/sub/deeper", os.O_RDONLY | os.O_DIRECTORY)
opens("{d}/exact")                     # wanted; the climbs to it below are no repeats of it
opens("..", deeper)                    # {d}/sub: not wanted
opens(".", deeper)                     # {d}/sub/deeper: not wanted
opens("./..", deeper)                  # {d}/sub: not wanted
opens("../../exact", deeper)           # wanted
opens("./../.././exact", deeper, os.O_NOCTTY)  # wanted
opens("../../other", deeper)           # not wanted
top = os.open("{d}", os.O_RDONLY | os.O_DIRECTORY)
opens("..hidden", top)                 # a name: wanted
opens("..z", top)                      # a name: not wanted
os.chdir("{d}/in/x")
opens("..")                            # {d}/in: wanted
m = os.open("{d}/mnt/m", os.O_RDONLY | os.O_DIRECTORY)
opens("../../exact", m, os.O_NOFOLLOW)  # across the tmpfs's root: wanted
opens("../..", m)                      # {d}: not wanted
os.chdir("/")
opens("../../etc/hostname")            # never above the root: wanted
opens("sub/../exact", top, os.O_CLOEXEC)  # a `..` further on: user space judges it
opens("a../f", top)                    # `../` in a name: as fd.nameraw contains "../" sees it, sent
""")
        assert p.returncode == 0, p.err
        col = probe.col
        await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
    finally:
        probe.svc.load_plan(FilterPlan.capture_all(probe.svc.cfg.kinds))
        subprocess.run(["umount", str(d / "mnt")], check=True)
    got = sorted((e["raw_path"], e["path"]) for e in col.events if e["kind"] == "open" and e["pid"] == p.pid
                 and (e["path"].startswith(str(d)) or e["path"] == "/etc/hostname"))
    assert got == sorted([
        ("../../exact", f"{d}/exact"), ("./../.././exact", f"{d}/exact"), ("..hidden", f"{d}/..hidden"),
        ("..", f"{d}/in"), ("../../exact", f"{d}/exact"), ("../../etc/hostname", "/etc/hostname"),
        ("sub/../exact", f"{d}/exact"), (f"{d}/exact", f"{d}/exact"), ("a../f", f"{d}/a../f")]), got
    probe.svc.read_counters()
    assert probe.svc.stats.get("probe_filtered_events_total", kind="open") - filtered_before >= 6
    shutil.rmtree(d)


async def test_paths_are_absolute_and_normalised(probe, tmp_path):
    """Relative paths (working directory, dirfd), `//`, `.` and `..`: the event's path is the
    absolute, normalised one, the argument as written is kept in raw_path."""
    shutil.copy("/bin/true", tmp_path / "x")
    (tmp_path / "sub").mkdir()
    p = await run_child(sys.executable, "-c", f"""
import os, subprocess
os.chdir("/etc")
open("passwd").read()
open("/etc//passwd").read()
open("/etc/./../etc/passwd").read()
fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open("passwd", os.O_RDONLY | os.O_NOCTTY, dir_fd=fd))  # other flags: not a repeat
os.close(os.open("../etc/passwd", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd))
os.chdir("{tmp_path}/sub")
os.chdir("..")
os.chmod("x", 0o755)
subprocess.run(["./x"], check=True)
os.symlink("x", "sl")                               # the target, resolved against the link's directory
d = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
os.chdir("/")
os.link("x", "{tmp_path}/hl", src_dir_fd=d)         # linkat(dirfd, "x", AT_FDCWD, absolute)
os.rename("hl", "sub/../hl2", src_dir_fd=d, dst_dir_fd=d)
os.mkdir("sub/./newdir", 0o750, dir_fd=d)          # mkdirat(dirfd, ...)
""")
    assert p.returncode == 0, p.err
    col = probe.col
    await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
    opens = [e for e in col.events if e["kind"] == "open" and e["pid"] == p.pid and "passwd" in e["raw_path"]]
    assert {(e["raw_path"], e["path"]) for e in opens} == {
        ("passwd", "/etc/passwd"), ("/etc//passwd", "/etc/passwd"), ("/etc/./../etc/passwd", "/etc/passwd"),
        ("../etc/passwd", "/etc/passwd")}
    assert len([e for e in opens if e["raw_path"] == "passwd"]) == 2  # cwd /etc, and dirfd of /etc
    cds = [(e["raw_path"], e["path"]) for e in col.events if e["kind"] == "chdir" and e["pid"] == p.pid]
    assert cds == [("/etc", "/etc"), (f"{tmp_path}/sub", f"{tmp_path}/sub"), ("..", str(tmp_path)), ("/", "/")]
    ch = [e for e in col.events if e["kind"] == "chmod" and e["pid"] == p.pid]
    assert [(e["raw_path"], e["path"]) for e in ch] == [("x", f"{tmp_path}/x")]
    ex = (await col.wait(lambda e: e["kind"] == "exec" and e["ppid"] == p.pid and e["raw_filename"] == "./x"))[0]
    assert ex["filename"] == f"{tmp_path}/x"
    sl = (await col.wait(lambda e: e["kind"] == "symlink" and e["pid"] == p.pid))[0]
    assert (sl["target"], sl["raw_target"], sl["raw_path"], sl["path"]) == (f"{tmp_path}/x", "x", "sl", f"{tmp_path}/sl")
    ln = (await col.wait(lambda e: e["kind"] == "link" and e["pid"] == p.pid))[0]
    assert (ln["oldpath"], ln["raw_oldpath"], ln["newpath"]) == (f"{tmp_path}/x", "x", f"{tmp_path}/hl")
    rn = (await col.wait(lambda e: e["kind"] == "rename" and e["pid"] == p.pid))[0]
    assert (rn["oldpath"], rn["newpath"], rn["raw_newpath"]) == (f"{tmp_path}/hl", f"{tmp_path}/hl2", "sub/../hl2")
    mk = (await col.wait(lambda e: e["kind"] == "mkdir" and e["pid"] == p.pid))[0]
    assert (mk["path"], mk["raw_path"], mk["mode"], mk["ret"]) == (f"{tmp_path}/sub/newdir", "sub/./newdir", 0o750, 0)


async def test_a_base_too_deep_to_walk_is_counted_and_the_event_still_sent(probe, tmp_path):
    deep = tmp_path.joinpath(*["d"] * 40)  # deeper than the kernel walks (PW_DEPTH)
    deep.mkdir(parents=True)
    probe.svc.read_counters()
    before = probe.svc.stats.get("probe_path_unresolved_total", reason="too_deep_or_long") or 0
    p = await run_child(sys.executable, "-c", f"import os; os.chdir({str(deep)!r}); open('deepfile', 'w').close()")
    assert p.returncode == 0, p.err
    ev = (await probe.col.wait(lambda e: e["kind"] == "open" and e["pid"] == p.pid
                               and e["raw_path"] == "deepfile"))[0]
    assert ev["path"] == "deepfile"  # as written: the base is unknown (user space cannot guess it)
    probe.svc.read_counters()
    assert probe.svc.stats.get("probe_path_unresolved_total", reason="too_deep_or_long") > before


async def test_container_paths_are_absolute_in_the_container(probe, bb_image):
    """`cd /etc && cat shadow`, `/etc//shadow` and `cd /dev/shm && ./x` in a container: the
    container's own absolute paths (not the host's overlay directories)."""
    name = f"eun-paths-{uuid.uuid4().hex[:8]}"
    try:
        # blocking podman calls in threads: the loop keeps taking the bus's messages meanwhile
        await asyncio.to_thread(containers.run, ["sh", "-c", "sleep 1; cd /etc && cat shadow; cat /etc//shadow; "
                                                 "cp /bin/busybox /dev/shm/x; cd /dev/shm && ./x true; sleep 1"],
                                name=name, detach=True, flags=["--network", "none"])
        cid = await asyncio.to_thread(containers.inspect_id, name)
        inode = Path(f"/sys/fs/cgroup/unified/libpod_parent/libpod-{cid}").stat().st_ino
        await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "wait", name], capture_output=True, timeout=60)
    finally:
        await asyncio.to_thread(containers.remove, name)
    col = probe.col
    opens = await col.wait(lambda e: e["kind"] == "open" and e["cgroup_id"] == inode
                           and e["path"] == "/etc/shadow", n=2)
    assert {e["raw_path"] for e in opens} == {"shadow", "/etc//shadow"}
    ex = (await col.wait(lambda e: e["kind"] == "exec" and e["cgroup_id"] == inode
                         and e["raw_filename"] == "./x"))[0]
    assert ex["filename"] == "/dev/shm/x"


async def test_ia32_syscalls_in_a_container_arrive_like_native_ones(probe, bb_image, tmp_path):
    """A static 64-bit helper makes its calls through int $0x80 (the ia32 ABI, which
    syscalls:* tracepoints never see) inside a container: each arrives as the same
    kind, with the same fields, as the native call. Its second part (fchmod, the chown
    and truncate families, sockets and socketcall, dup) runs again with the x86_64
    `syscall` instruction (as int80n): every ia32 event equals its native twin."""
    exe = tmp_path / "int80"
    subprocess.run(["gcc", "-static", "-no-pie", "-O1", "-o", str(exe), str(Path(__file__).parent / "data/int80.c")],
                   check=True, capture_output=True)
    shutil.copy(exe, tmp_path / "int80n")  # its own comm: the native run's events are told apart by it
    name = f"eun-int80-{uuid.uuid4().hex[:8]}"
    col = probe.col
    try:
        # blocking podman calls run in threads: the loop keeps taking the bus's messages (a node
        # busy with parallel tests sends many), and the wait for the opens starts before the helper runs
        await asyncio.to_thread(
            containers.run, ["sh", "-c", "sleep 3; /h/int80; /h/int80n native; sleep 1"], name=name, detach=True,
            # unconfined: podman's seccomp profile refuses bpf/finit_module/unshare before
            # any tracepoint (either ABI) can see them
            flags=["--network", "none", "--security-opt", "seccomp=unconfined", "-v", f"{tmp_path}:/h:ro"])
        cid = await asyncio.to_thread(containers.inspect_id, name)
        inode = Path(f"/sys/fs/cgroup/unified/libpod_parent/libpod-{cid}").stat().st_ino

        def mine(kind):
            return lambda e: e["kind"] == kind and e["cgroup_id"] == inode and e["comm"] in ("int80", "true")
        opening = asyncio.create_task(col.wait(lambda e: mine("open")(e) and e["path"] == "/etc/shadow", n=3,
                                               timeout=60))
        await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "wait", name], capture_output=True, timeout=60)
    finally:
        await asyncio.to_thread(containers.remove, name)
    try:
        opens = await opening
    except AssertionError:
        raise AssertionError([(e["kind"], e.get("raw_path"), e.get("path"), e.get("flags"), e.get("ret"))
                              for e in col.events if e["cgroup_id"] == inode and e["comm"] == "int80"]) from None
    assert sorted(e["raw_path"] for e in opens) == ["/etc/shadow", "shadow", "shadow"]  # cwd, then dirfd
    assert (await col.wait(mine("chdir")))[0]["path"] == "/etc"
    cn = (await col.wait(lambda e: mine("connect")(e) and e["daddr"] != "127.0.0.1"))[0]
    assert (cn["daddr"], cn["dport"], cn["family"]) == ("169.254.169.254", 80, socket.AF_INET)
    assert (await col.wait(mine("ptrace")))[0]["request"] == 16
    su = (await col.wait(mine("setuid")))[0]
    assert (su["uid"], su["syscall"]) == (0, "setuid")
    mt = (await col.wait(mine("mount")))[0]
    assert (mt["source"], mt["target"], mt["fstype"]) == ("none", "/mnt", "tmpfs")
    assert (await col.wait(mine("module")))[0]["syscall"] == "finit_module"
    assert (await col.wait(mine("bpf")))[0]["cmd"] == 5
    assert (await col.wait(mine("unshare")))[0]["flags"] == 0x20000
    ex = (await col.wait(lambda e: mine("exec")(e) and e["argv"] == ["true", "int80"]))[0]
    assert (ex["filename"], ex["ret"]) == ("/bin/true", 0)
    env = (await col.wait(lambda e: e["kind"] == "execenv" and e["pid"] == ex["pid"]))[0]  # 32-bit envp
    assert (env["env"], env["env_scanned"], env["env_truncated"]) == ({"LD_PRELOAD": "/tmp/int80.so"}, 2, False)
    sl = (await col.wait(mine("symlink")))[0]
    assert (sl["target"], sl["raw_target"], sl["path"]) == ("/etc/shadow", "shadow", "/etc/sl")
    ln = (await col.wait(mine("link")))[0]
    assert (ln["oldpath"], ln["newpath"], ln["raw_newpath"]) == ("/etc/shadow", "/etc/hl", "hl")
    rn = (await col.wait(mine("rename")))[0]
    assert (rn["oldpath"], rn["newpath"]) == ("/etc/hl", "/etc/hl2")
    mk = (await col.wait(mine("mkdir")))[0]
    assert (mk["path"], mk["raw_path"], mk["mode"]) == ("/etc/.d", ".d", 0o700)

    # the second part, in both ABIs: the same events in the same order, but for who made them
    # (and the ephemeral port of the peer an accept reports)
    def part2(comm, kind):
        return lambda e: (e["kind"] == kind and e["cgroup_id"] == inode and e["comm"] == comm
                          and (kind != "connect" or e["daddr"] == "127.0.0.1"))

    def fields(e):
        return {k: v for k, v in e.items()
                if k not in ("id", "ts", "pid", "tid", "ppid", "comm") and not (e["kind"] == "accept" and k == "dport")}
    counts = {"chmod": 1, "chown": 7, "truncate": 4, "socket": 2, "listen": 2, "connect": 3, "accept": 3, "dup": 3}
    ia32 = {}
    for kind, n in counts.items():
        ia32[kind] = await col.wait(part2("int80", kind), n=n)
        native = await col.wait(part2("int80n", kind), n=n)
        assert [fields(e) for e in ia32[kind]] == [fields(e) for e in native], kind
    for kind, n in counts.items():  # and no more than these
        assert len([e for e in col.events if part2("int80", kind)(e)]) == n, kind
    f, etcfd = 3, 4  # the helper closed fds 3-63 first: the log file, then /etc
    log = "/var/log/int80.log"  # fd f: fchmod & co name it by the path the kernel walks from the fd
    assert [(e["path"], e["mode"], e["fd"], e["ret"]) for e in ia32["chmod"]] == [(log, 0o600, f, 0)]
    assert [(e["path"], e["owner_uid"], e["owner_gid"], e.get("flags"), e.get("fd"), e.get("dirfd"), e["ret"])
            for e in ia32["chown"]] == [
        ("/etc/shadow", 1000, None, 0, None, -100, 0),   # chown16, 0xffff: unchanged
        ("/etc/shadow", 1001, 0, 0x100, None, -100, 0),  # lchown16
        (log, 1002, None, None, f, None, 0),             # fchown16
        ("/etc/shadow", 1003, None, 0, None, -100, 0),   # chown32
        ("/etc/shadow", 1004, 42, 0x100, None, -100, 0),  # lchown32
        (log, 1005, 0, None, f, None, 0),                # fchown32
        ("shadow", 1006, 0, 0x100, None, etcfd, 0)]      # fchownat
    assert [(e["path"], e["length"], e.get("fd"), e["ret"]) for e in ia32["truncate"]] == [
        (log, 0, None, 0), (log, 0, f, 0), (log, (1 << 32) + 5, None, 0), (log, (1 << 32) + 7, f, 0)]
    assert all(e.get("path_from_fd", False) is ("fd" in e) for k in ("chmod", "chown", "truncate") for e in ia32[k])
    assert [(e["family"], e["type"], e["protocol"]) for e in ia32["socket"]] == [(17, 3, 0x300), (17, 2, 0x300)]
    assert [(e["saddr"], e["sport"], e["backlog"], e["ret"]) for e in ia32["listen"]] == [
        ("127.0.0.1", 4321, 8, 0), ("127.0.0.1", 4322, 8, 0)]
    # the type (tcp) comes from the socket the probe remembered at socket() / socketcall socket
    assert [(e["dport"], e["proto"], e["ret"]) for e in ia32["connect"]] == [
        (4321, "tcp", 0), (4322, "tcp", 0), (4322, "tcp", 0)]
    acc = ia32["accept"]
    assert [(e["daddr"], e["saddr"], e["sport"], e["proto"]) for e in acc] == [
        ("127.0.0.1", "127.0.0.1", 4321, "tcp"), ("127.0.0.1", "127.0.0.1", 4322, "tcp"),
        (None, "127.0.0.1", 4322, "tcp")] and all(e["ret"] > f for e in acc)
    assert [(e["syscall"], e["oldfd"], e["newfd"], e["fd_type"]) for e in ia32["dup"]] == [
        ("dup", acc[0]["ret"], ia32["dup"][0]["ret"], "socket"), ("dup2", acc[0]["ret"], 0, "socket"),
        ("dup3", acc[1]["ret"], 1, "socket")]


async def test_control_requests(probe):
    bus, ctl = probe.bus, subjects.ctl_probe(NODE)
    st = await bus.request_json(ctl, {"op": "status"})
    assert "process.bpf.c" in st["files"] and st["tracepoints"] > 50 and st["pid"] == os.getpid()
    assert set(st["kinds"]) >= {"exec", "open", "connect"}
    assert "unknown op" in (await bus.request_json(ctl, {"op": "nope"}))["error"]
    msg = await bus.nc.request(ctl, b"{not json", timeout=5)
    assert "not JSON" in orjson.loads(msg.data)["error"]
    sc = await bus.request_json(ctl, {"op": "syscalls", "cgroup_id": 12345678})
    assert sc.get("syscalls") == [] or "error" in sc
    exc = await bus.request_json(ctl, {"op": "exclude", "pids": [1]})  # gone: no op names pids
    assert exc["code"] == "unknown_op" and exc["ok"] is False
    assert probe.svc.stats.total("ctl_errors_total") >= 3
    assert probe.svc.stats.get("ctl_requests_total", op="status") >= 1
    # the all-probes broadcast takes plans only: pids are node-local
    await bus.publish(subjects.CTL_PROBES, orjson.dumps({"op": "exclude", "pids": [4_000_002]}))
    await bus.nc.flush()
    await asyncio.sleep(0.3)
    assert 4_000_002 not in probe.svc.excluded


async def test_missing_tracepoint_is_named_and_the_rest_loads(probe, tmp_path):
    st = await probe.bus.request_json(subjects.ctl_probe(NODE), {"op": "status"})
    if "syscalls:sys_enter_init_module" in st["missing_tracepoints"]:  # no module support on this kernel
        assert any("sys_enter_init_module" in e and "kernel.bpf.c" in e for e in st["errors"])
        assert "kernel.bpf.c" in st["files"]  # guarded: only that part is off
    bpf_dir = tmp_path / "bpf"
    bpf_dir.mkdir()
    (bpf_dir / "common.h").write_text((loader.BPF_DIR / "common.h").read_text())
    (bpf_dir / "good.bpf.c").write_text(
        "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }\n"
        "#if HAVE_TP(syscalls, sys_enter_no_such_call)\n"
        "TRACEPOINT_PROBE(syscalls, sys_enter_no_such_call) { return 0; }\n#endif\n")
    (bpf_dir / "bad.bpf.c").write_text("TRACEPOINT_PROBE(nosuchcat, nosuchevent) { return 0; }\n")
    plan = loader.plan_sources(bpf_dir)
    assert [p.name for p in plan.files] == ["good.bpf.c"]
    assert "nosuchcat:nosuchevent" in plan.dropped["bad.bpf.c"]
    assert any("bad.bpf.c" in e and "nosuchcat:nosuchevent" in e for e in plan.errors)
    assert any("good.bpf.c" in e and "syscalls:sys_enter_no_such_call" in e for e in plan.errors)
    b = await asyncio.get_running_loop().run_in_executor(None, loader.compile_and_attach, plan, 8, 1, bpf_dir)
    try:
        assert b.num_open_tracepoints() == 1
    finally:
        b.cleanup()
    with pytest.raises(loader.ProbeLoadError, match="tracefs is not mounted"):
        orig = loader.TRACEFS_CANDIDATES
        loader.TRACEFS_CANDIDATES = (tmp_path / "no-tracefs",)
        try:
            loader.tracefs_root()
        finally:
            loader.TRACEFS_CANDIDATES = orig


async def test_config_is_validated():
    with pytest.raises(ConfigError, match="probe.kinds"):
        ProbeConfig(kinds=("exec", "teleport"))
    with pytest.raises(ConfigError, match="probe.ringbuf_pages"):
        ProbeConfig(ringbuf_pages=100)
    with pytest.raises(ConfigError, match="probe.exclude_pids"):
        ProbeConfig(exclude_pids=(-1,))
    with pytest.raises(ConfigError, match="probe.capture"):
        ProbeConfig(capture="some")


async def test_repeats_are_sent_once_then_counted(probe):
    d = Path(f"/tmp/eundedup-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    (d / "f").write_text("x")
    p = await run_child(sys.executable, "-c", f"""
for _ in range(50):
    open("{d}/f").read()
open("{d}/f", "w").write("y")   # other flags: its own event
""")
    col = probe.col
    await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
    mine = [e for e in col.events if e["kind"] == "open" and e["pid"] == p.pid and e["path"] == f"{d}/f"]
    assert [e["flags"] & 3 for e in mine] == [0, 1] and not any("repeat" in e for e in mine)
    await asyncio.sleep(probe.svc.cfg.dedup_window_ms / 1000 + 0.2)
    await probe.svc.report_repeats()  # (the probe's own loop may have reported it already)
    rep = (await col.wait(lambda e: e["kind"] == "open" and e["pid"] == p.pid and "repeat" in e
                          and e["path"] == f"{d}/f"))[0]
    assert rep["repeat"] == 49 and rep["path"] == f"{d}/f" and rep["first_ts"] == mine[0]["ts"] <= rep["ts"]
    assert probe.svc.stats.get("probe_dedup_repeats_total") >= 49
    (d / "f").unlink()
    d.rmdir()


async def test_process_memory_reads_and_ptrace_requests_are_sent_once_then_counted(probe):
    # a profiler or debugger reads another process's memory thousands of times a second
    p = await run_child(sys.executable, "-c", """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
kid = os.fork()
if kid == 0:
    time.sleep(5); os._exit(0)
io = iovec(ctypes.addressof(buf), 8)
libc.process_vm_readv(kid, ctypes.byref(io), 1, ctypes.byref(io), 1, 1)   # EINVAL: fails first
for _ in range(200):
    libc.process_vm_readv(kid, ctypes.byref(io), 1, ctypes.byref(io), 1, 0)
libc.process_vm_writev(kid, ctypes.byref(io), 1, ctypes.byref(io), 1, 0)   # the other direction: its own
for _ in range(100):   # and a debugger's ptrace requests (on a child it does not trace: they fail)
    libc.ptrace(0x4207, kid, 0, 0)   # PTRACE_INTERRUPT
os.kill(kid, 9); os.waitpid(kid, 0)
""")
    col = probe.col
    await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
    pt = [e for e in col.events if e["kind"] == "ptrace" and e["pid"] == p.pid and "repeat" not in e]
    assert len(pt) == 1 and pt[0]["request"] == 0x4207, pt
    mine = [e for e in col.events if e["kind"] == "procvm" and e["pid"] == p.pid and "repeat" not in e]
    # a failed first read does not hide the successful ones: the outcome is part of the repeat's key
    assert [(e["syscall"], e["ret"] >= 0) for e in mine] == [
        ("process_vm_readv", False), ("process_vm_readv", True), ("process_vm_writev", True)], mine
    mine = mine[1:]
    await asyncio.sleep(probe.svc.cfg.dedup_window_ms / 1000 + 0.2)
    await probe.svc.report_repeats()
    rep = (await col.wait(lambda e: e["kind"] == "procvm" and e["pid"] == p.pid and "repeat" in e))[0]
    assert rep["repeat"] == 199 and rep["syscall"] == "process_vm_readv"
    assert rep["target_pid"] == mine[0]["target_pid"] and rep["first_ts"] == mine[0]["ts"]
    rep = (await col.wait(lambda e: e["kind"] == "ptrace" and e["pid"] == p.pid and "repeat" in e))[0]
    assert rep["repeat"] == 99 and rep["request"] == 0x4207
