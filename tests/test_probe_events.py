"""The probe's detection events (issue 9) with real BPF: exec environment,
controlling tty, chown, truncate, process_vm_readv/writev, umount, W+X memory,
userfaultfd, and the
caller's ids on set*id events. Real child processes; every assertion is
filtered by the child's pid (other tests run at the same time).
"""
from __future__ import annotations

import os
import sys

import pytest

from shared.capabilities import cap_names
from tests.test_probe import probe, run_child  # noqa: F401 - probe is a fixture

pytestmark = [pytest.mark.bpf, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]

ACTIONS = r'''
import ctypes, os, pty, sys
d = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)

# exec environment: a watched variable past a long environment, one short name, one unwatched
env = {f"PAD{i}": "x" for i in range(40)}
env.update(LD_PRELOAD="/tmp/evil.so", HISTFILE="/dev/null", NOT_WATCHED="1")
pid = os.fork()
if pid == 0:
    os.execve("/bin/true", ["true", "env-child"], env)
os.waitpid(pid, 0)

# a controlling tty: pty.fork makes the child a session leader on the pty slave
pid, master = pty.fork()
if pid == 0:
    os.execv("/bin/true", ["true", "tty-child"])
os.waitpid(pid, 0)

# chown family, truncate and ftruncate
path = f"{d}/owned"
open(path, "w").write("data" * 100)
os.chown(path, 65534, -1)
os.lchown(path, -1, 65534)
fd = os.open(path, os.O_WRONLY)
os.fchown(fd, 0, 0)
os.ftruncate(fd, 0)
libc.syscall(260, fd, b"", 0, 7, 0x1000)    # fchownat(fd, "", 0, 7, AT_EMPTY_PATH): the fd's own file
libc.syscall(452, fd, b"", 0o640, 0x1000)  # fchmodat2(fd, "", 0640, AT_EMPTY_PATH)
os.close(fd)
mfd = os.memfd_create("scratch")
os.ftruncate(mfd, 12345)                   # a memfd: a file of no directory tree, no path
root = os.open("/", os.O_RDONLY)
os.fchmod(root, os.stat("/").st_mode & 0o7777)  # the root itself (its mode unchanged): "/"
cwd = os.getcwd()
os.chdir(d)
libc.syscall(260, -100, b"", -1, 9, 0x1000)  # fchownat(AT_FDCWD, "", ..., AT_EMPTY_PATH): the cwd
os.chdir(cwd)
os.truncate(path, 3)

# process_vm_readv / process_vm_writev on a child
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
kid = os.fork()
if kid == 0:
    import time; time.sleep(3); os._exit(0)
local = iovec(ctypes.addressof(buf), 8)
remote = iovec(ctypes.addressof(buf), 8)
libc.process_vm_readv(kid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
libc.process_vm_writev(kid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
os.kill(kid, 9); os.waitpid(kid, 0)

# umount2 of something not mounted (fails: the attempt is the event)
libc.umount2(f"{d}/not-mounted".encode(), 2)  # MNT_DETACH

# W+X memory: an RWX anonymous mapping, an RW page made RWX, and an RW mapping (not sent)
import mmap as mm
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
rwx = mm.PROT_READ | mm.PROT_WRITE | mm.PROT_EXEC
libc.mmap(None, 8192, rwx, mm.MAP_PRIVATE | mm.MAP_ANONYMOUS, -1, 0)
rw = libc.mmap(None, 4096, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_PRIVATE | mm.MAP_ANONYMOUS, -1, 0)
libc.mprotect(rw, 4096, rwx)
libc.syscall(323, 1 | os.O_CLOEXEC)  # userfaultfd(UFFD_USER_MODE_ONLY)

# set*id: the head's ids are the caller's before the call
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
pid = os.fork()  # an unprivileged exec: no permitted capabilities
if pid == 0:
    os.execv("/bin/true", ["true", "nocap-child"])
os.waitpid(pid, 0)
print(os.getpid(), flush=True)
'''


async def test_detection_events_arrive_with_their_fields(probe, tmp_path):  # noqa: F811
    script = tmp_path / "actions.py"
    script.write_text(ACTIONS)
    p = await run_child(sys.executable, str(script), str(tmp_path))
    assert p.returncode == 0, p.err
    col, pid, d = probe.col, p.pid, str(tmp_path)

    def of(kind, **want):
        return lambda e: e["kind"] == kind and e["pid"] == pid and all(e.get(k) == v for k, v in want.items())

    def child_of(kind, arg):
        return lambda e: e["kind"] == kind and e.get("ppid") == pid and arg in (e.get("argv") or [])

    # the environment event comes from the child at execve entry, before its exec
    env_ex = (await col.wait(child_of("exec", "env-child")))[0]
    env = (await col.wait(lambda e: e["kind"] == "execenv" and e["pid"] == env_ex["pid"]))[0]
    assert env["env"] == {"LD_PRELOAD": "/tmp/evil.so", "HISTFILE": "/dev/null"}
    assert env["env_scanned"] == 43 and env["env_truncated"] is False and env["ts"] <= env_ex["ts"]

    wx = await col.wait(of("mprotect"), n=2)
    assert {(e["syscall"], e["prot"], e["len"]) for e in wx} == {("mmap", 7, 8192), ("mprotect", 7, 4096)}
    assert all(e["ret"] >= 0 for e in wx) and next(e for e in wx if e["syscall"] == "mmap")["flags"] & 0x20
    uf = (await col.wait(of("userfaultfd")))[0]
    assert uf["flags"] & 1 and uf["ret"] >= 0

    tty_ex = (await col.wait(child_of("exec", "tty-child")))[0]
    assert tty_ex["tty"] is not None and tty_ex["tty"] >> 8 == 136, tty_ex  # /dev/pts/N: major 136
    assert env_ex["tty"] == 0  # the plain child has no controlling terminal (run_child uses pipes)
    # permitted capabilities after the exec: root's full set (as this process has), none for uid 65534
    cap_prm = int(next(x for x in open("/proc/self/status") if x.startswith("CapPrm:")).split()[1], 16)
    assert env_ex["cap_permitted"] == cap_prm and "CAP_SYS_ADMIN" in cap_names(cap_prm), env_ex
    nocap = (await col.wait(child_of("exec", "nocap-child")))[0]
    assert nocap["cap_permitted"] == 0 and nocap["uid"] == 65534, nocap
    cap_bnd = int(next(x for x in open("/proc/self/status") if x.startswith("CapBnd:")).split()[1], 16)
    assert env_ex["cap_bounding"] == nocap["cap_bounding"] == cap_bnd  # the bounding set stays

    path = f"{d}/owned"
    ch = (await col.wait(of("chown", path=path)))[0]
    assert (ch["owner_uid"], ch["owner_gid"], ch["ret"]) == (65534, None, 0)
    lch = (await col.wait(of("chown", path=path, flags=0x100)))[0]
    assert (lch["owner_uid"], lch["owner_gid"]) == (None, 65534)
    # by fd: the kernel walks the fd's path
    fch = (await col.wait(of("chown", owner_uid=0, owner_gid=0)))[0]
    assert fch["path"] == path and fch["path_from_fd"] and fch["fd"] >= 0 and fch["ret"] == 0 and "flags" not in fch
    ftr = (await col.wait(of("truncate", length=0)))[0]
    assert ftr["path"] == path and ftr["fd"] == fch["fd"] and ftr["ret"] == 0
    ech = (await col.wait(of("chown", owner_uid=0, owner_gid=7)))[0]  # AT_EMPTY_PATH: by fd as well
    assert (ech["path"], ech["fd"], ech["path_from_fd"], ech["ret"]) == (path, fch["fd"], True, 0)
    ecm = (await col.wait(of("chmod", mode=0o640, path=path)))[0]
    assert (ecm["fd"], ecm["path_from_fd"], ecm["ret"]) == (fch["fd"], True, 0)
    mtr = (await col.wait(of("truncate", length=12345)))[0]
    assert (mtr["path"], mtr["path_from_fd"], mtr["ret"]) == (None, False, 0)
    rch = (await col.wait(lambda e: of("chmod", path="/")(e) and e.get("fd", -1) >= 0))[0]
    assert rch["path_from_fd"] is True and rch["ret"] == 0
    cwd_ch = (await col.wait(of("chown", owner_gid=9)))[0]
    assert (cwd_ch["path"], cwd_ch["fd"], cwd_ch["path_from_fd"]) == (d, -100, True)
    tr = (await col.wait(of("truncate", path=path, length=3)))[0]
    assert tr["ret"] == 0 and tr["dirfd"] == -100 and "fd" not in tr

    rd = (await col.wait(of("procvm", syscall="process_vm_readv")))[0]
    wr = (await col.wait(of("procvm", syscall="process_vm_writev")))[0]
    assert rd["target_pid"] == wr["target_pid"] != pid and rd["ret"] == wr["ret"] == 8 and rd["riovcnt"] == 1

    um = (await col.wait(of("umount", target=f"{d}/not-mounted")))[0]
    assert um["flags"] == 2 and um["ret"] < 0

    sg = (await col.wait(of("setgid", syscall="setresgid")))[0]
    assert (sg["new_gid"], sg["gid"], sg["ret"]) == (65534, 0, 0)  # gid before the call
    su = (await col.wait(of("setuid", syscall="setresuid")))[0]
    assert (su["new_uid"], su["uid"], su["gid"], su["ret"]) == (65534, 0, 65534, 0)


PLAN_RULES = """
- rule: histfile
  desc: d
  condition: evt.type = execve and proc.env[HISTFILE] = /dev/null
  output: o
  priority: NOTICE
- rule: truncated key
  desc: d
  condition: evt.type = truncate and fd.name startswith {d}/keep/
  output: o
  priority: NOTICE
"""

CHILD = r'''
import os, sys
d = sys.argv[1]
env = {"LD_PRELOAD": "/tmp/x.so", "HISTFILE": "/dev/null", "HISTFILESIZE": "0"}
pid = os.fork()
if pid == 0:
    os.execve("/bin/true", ["true", "plan-env-child"], env)
os.waitpid(pid, 0)
for name in ("keep/a", "other"):
    open(f"{d}/{name}", "w").write("data")
    os.truncate(f"{d}/{name}", 1)
    os.chown(f"{d}/{name}", 0, 0)
    fd = os.open(f"{d}/{name}", os.O_RDWR)
    os.ftruncate(fd, 2)  # by fd: judged by the path the kernel walks from it
    os.close(fd)
mfd = os.memfd_create("scratch")
os.ftruncate(mfd, 4096)  # a memfd: no path, so no path test of the rule can match it: not sent
'''


async def test_plan_decides_env_names_and_new_kinds(probe, tmp_path):  # noqa: F811
    """Only the variables the rules read are looked for, and the new path kinds
    follow the plan's path filter (chown: no rule, not sent at all)."""
    from services.alerter.engine import load_rules_text
    from shared.filterplan import FilterPlan

    (tmp_path / "keep").mkdir()
    plan = load_rules_text(PLAN_RULES.format(d=tmp_path)).filter_plan("test")
    assert plan.env == ("HISTFILE",) and "execenv" in plan.kinds and "chown" not in plan.kinds
    assert "open" not in plan.kinds  # ftruncate's fd is named by the kernel, not from opens
    probe.svc.load_plan(plan)
    try:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        p = await run_child(sys.executable, str(script), str(tmp_path))
        assert p.returncode == 0, p.err
        col = probe.col
        await col.wait(lambda e: e["kind"] == "exit" and e["pid"] == p.pid)
        ex = (await col.wait(lambda e: e["kind"] == "exec" and "plan-env-child" in e["argv"]))[0]
        env = (await col.wait(lambda e: e["kind"] == "execenv" and e["pid"] == ex["pid"]))[0]
    finally:
        probe.svc.load_plan(FilterPlan.capture_all(probe.svc.cfg.kinds))
    # HISTFILESIZE shares HISTFILE's 8-byte kernel key, so it comes along; LD_PRELOAD was not looked for
    assert set(env["env"]) <= {"HISTFILE", "HISTFILESIZE"} and env["env"]["HISTFILE"] == "/dev/null"
    truncs = [(e["path"], e["length"]) for e in col.events if e["kind"] == "truncate" and e["pid"] == p.pid]
    assert truncs == [(f"{tmp_path}/keep/a", 1), (f"{tmp_path}/keep/a", 2)]
    assert not [e for e in col.events if e["kind"] == "chown" and e["pid"] == p.pid]


async def test_btf_offsets_and_their_errors(tmp_path):
    """The running kernel's BTF gives the tty offsets; a bad blob or a missing member is named."""
    from services.probe.btf import BTF, VMLINUX, BTFError, tty_cflags
    flags = tty_cflags()
    assert [f.split("=")[0] for f in flags] == ["-DTTY_OFF_SIGNAL", "-DTTY_OFF_TTY", "-DTTY_OFF_INDEX",
                                                "-DTTY_OFF_DRIVER", "-DTTY_OFF_MAJOR", "-DTTY_OFF_MINOR_START"]
    btf = BTF(VMLINUX.read_bytes())
    assert btf.member_offset("task_struct", "pid") > 0 and btf.member_offset("list_head", "next") == 0
    with pytest.raises(BTFError, match="no member nope"):
        btf.member_offset("task_struct", "nope")
    with pytest.raises(BTFError, match="struct no_such_struct"):
        btf.member_offset("no_such_struct", "x")
    with pytest.raises(BTFError, match="magic"):
        BTF(b"\0" * 64)
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"\0" * 64)
    assert tty_cflags(bad) == []  # tty unknown (-1 in the kernel, None in events), the probe still loads
