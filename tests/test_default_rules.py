"""The default ruleset against real behaviour: probe (real BPF) -> enricher ->
alerter in one module-scoped pipeline; every behaviour is performed for real
in a podman container (busybox, plus a static C helper for what busybox
cannot do, tests/data/alerter_actions.c) and the alert must name that
container.

Syscalls that podman's default seccomp profile refuses never reach the
syscall tracepoints (seccomp runs first), so those behaviours run with
`--security-opt seccomp=unconfined` (still unprivileged: they fail with
EPERM, and the attempt is what the rules flag). The release_agent rule is
exercised by opening for write a created file named release_agent.
"""
import asyncio
import subprocess

import pytest
import pytest_asyncio

from services.probe.config import ProbeConfig
from tests.conftest import ROOT
from tests.rule_containers import NO_NET, UNCONFINED, alert_for, alerting_pipeline, build_static, in_container

pytestmark = [pytest.mark.bpf, pytest.mark.podman, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def actions(tmp_path_factory):
    """tests/data/alerter_actions.c built static, in a folder to mount at /x."""
    return build_static(tmp_path_factory, "alerter_actions.c", "/x")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipe(tmp_path_factory, podman_socket, bb_image):
    # module loads: this kernel has no module tracepoints (nor modules), so the raw_syscalls
    # fallback is switched on explicitly ("auto" leaves it off where modules cannot load)
    async with alerting_pipeline(tmp_path_factory, podman_socket, ProbeConfig(module_fallback="on"),
                                 throttle_window_s=0) as p:
        yield p


BEHAVIOURS = [
    # (rule, script, needs: "unconfined" | "privileged" | "actions" | "nonet" | "shm")
    # a terminal (-t); the shells stay a while: the enricher reads the tty from /proc at their exec
    ("Terminal shell in container", 'sh -c "sleep 8; echo inner"; echo done', ("tty",)),
    ("Read sensitive file", "cat /etc/shadow >/dev/null", ()),
    ("Write below etc", "echo x > /etc/eunomia-test", ()),
    ("Write below binary dir", "echo x > /usr/bin/eunomia-test; echo x > /sbin/eunomia-test", ()),
    ("Netcat remote code execution",
     "nc -l -p 4444 >/dev/null </dev/null & L=$!; sleep 0.5; nc -w 2 127.0.0.1 4444 -e /bin/true; kill $L; true", ("nonet",)),
    ("Redirect STDOUT/STDIN to network connection in container",
     "nc -l -p 4444 >/dev/null </dev/null & L=$!; sleep 0.5; nc -w 2 127.0.0.1 4444 -e /bin/true; kill $L; true", ("nonet",)),
    ("Search for private keys", "find /etc -name id_rsa; grep -r 'BEGIN PRIVATE' /etc; true", ()),
    ("Clear log activities", ": > /var/log/app.log", ()),
    ("Disk wipe or filesystem creation", "echo secret > /tmp/f; shred -u /tmp/f; mke2fs /tmp/none 2>/dev/null; true",
     ()),
    ("Create symlink over sensitive files", "ln -s /etc/shadow /tmp/s", ()),
    ("Create hardlink over sensitive files", "ln /etc/passwd /tmp/p 2>/dev/null; true", ()),
    ("Create hardlink over sensitive files", "cd /etc && ln passwd /tmp/p 2>/dev/null; true", ()),
    ("Create symlink over sensitive files", "cd /tmp && ln -s ../etc/./shadow s", ()),
    ("Launch Privileged Container", "true", ("privileged",)),
    ("Mkdir binary dirs", "mkdir /usr/bin/.cache", ()),
    ("Hidden directory created in a temporary directory", "cd /tmp && mkdir ./.x", ()),
    ("Launch Container Sharing Host Namespaces", "true", ("hostpid",)),
    ("Launch Excessively Capable Container", "true", ("capsysadmin",)),
    ("Launch Excessively Capable Container", "true", ("capsysadmin", "nonroot")),  # only in the bounding set
    ("Launch Sensitive Mount Container", "true", ("etcmount",)),
    ("Packet socket created in container", "/x/actions packet; true", ("actions",)),
    ("Linux kernel module injection", "echo garbage > /tmp/evil.ko; insmod /tmp/evil.ko; true", ("unconfined",)),
    ("Write to cgroup release_agent", "echo /tmp/payload > /tmp/release_agent", ()),
    ("PTRACE attached to process", "/x/actions ptrace-attach", ("actions",)),
    ("PTRACE anti-debug attempt", "/x/actions traceme", ("actions",)),
    ("Execution from /dev/shm", "cp /bin/busybox /dev/shm/true && /dev/shm/true", ("shm",)),
    ("Drop and execute new binary in container", "cp /bin/busybox /tmp/true && /tmp/true", ()),
    ("Fileless execution via memfd_create", "/x/actions memfd-exec", ("actions",)),
    ("Set setuid or setgid bit", "cp /bin/busybox /tmp/sb && chmod u+s /tmp/sb", ()),
    ("Change namespace in container", "unshare -m true; true", ("unconfined",)),
    ("Change namespace in container", "nsenter -t 1 -m true; true", ("unconfined",)),
    ("BPF program loaded", "/x/actions bpf; true", ("actions", "unconfined")),
    ("Mount in container", "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t", ("privileged",)),
    ("Contact cloud metadata service", "nc -w 1 169.254.169.254 80 </dev/null; true", ("nonet",)),
    ("io_uring ring created in container", "/x/actions iouring-open /etc/shadow", ("actions", "unconfined")),
    ("File or network operation through io_uring in container", "/x/actions iouring-open /etc/shadow",
     ("actions", "unconfined")),
    ("Package management process in container", "ln -s /bin/busybox /tmp/apk; /tmp/apk add curl; true", ()),
    # paths as rules see them: absolute and normalised, whatever the process wrote
    ("Read sensitive file", "cd /etc && cat shadow >/dev/null", ()),
    ("Read sensitive file", "cat /etc//shadow >/dev/null", ()),
    ("Read sensitive file", "cd /tmp && cat ../etc/./shadow >/dev/null", ()),
    ("Execution from /dev/shm", "cp /bin/busybox /dev/shm/true && cd /dev/shm && ./true", ("shm",)),
    # a traversal by a program that is no shell's child (it replaces the entrypoint shell)
    ("Directory traversal monitored file read", "cd /tmp && exec /x/actions read ../../etc/passwd", ("actions",)),
]

# The same behaviours through the ia32 ABI (int $0x80): tests/data/int80.c makes each call
# (open /etc/shadow by absolute path, by cwd and by dirfd; connect to the metadata address,
# ptrace, setuid, mount, finit_module, bpf, unshare, relative link, chown of /etc/shadow to
# uid 1000, truncate of a /var/log file to 0, AF_PACKET sockets, dup2/dup3 of an accepted
# loopback connection onto fds 0 and 1, execve with LD_PRELOAD in its 32-bit environment) and must
# raise the native alerts.
INT80_RULES = ["Read sensitive file", "Contact cloud metadata service", "PTRACE attached to process",
               "Create hardlink over sensitive files",
               "BPF program loaded", "Change namespace in container", "Linux kernel module injection",
               "Sensitive file ownership changed", "Clear log activities", "Packet socket created in container",
               "Redirect STDOUT/STDIN to network connection in container", "LD_PRELOAD in exec environment"]


@pytest.fixture(scope="module")
def int80(tmp_path_factory):
    d = tmp_path_factory.mktemp("int80")
    subprocess.run(["gcc", "-static", "-no-pie", "-O1", "-o", str(d / "int80"), str(ROOT / "tests/data/int80.c")],
                   check=True, capture_output=True)
    return ["-v", f"{d}:/h:ro"]


@pytest.mark.parametrize("rule", INT80_RULES)
async def test_ia32_behaviour_raises_the_native_alert(pipe, int80, rule):
    cid = await in_container("/h/int80; true", [*UNCONFINED, *NO_NET, *int80])
    ev = (await alert_for(pipe, rule, cid))["event"]
    assert ev["container"]["id"] == cid
    assert ev["comm"] == "int80" or (ev["kind"] == "exec" and ev["argv"] == ["true", "int80"])  # the image it ran


def _flags(needs, actions):
    flags = []
    if "unconfined" in needs:
        flags += UNCONFINED
    if "privileged" in needs:
        flags += ["--privileged"]
    if "hostpid" in needs:
        flags += ["--pid", "host"]
    if "capsysadmin" in needs:
        flags += ["--cap-add", "SYS_ADMIN"]
    if "nonroot" in needs:
        flags += ["--user", "1000:1000"]
    if "etcmount" in needs:
        flags += ["-v", "/etc:/host-etc:ro"]
    if "nonet" in needs:
        flags += NO_NET
    if "shm" in needs:
        flags += ["--tmpfs", "/dev/shm:rw,exec,size=16m"]
    if "actions" in needs:
        flags += actions
    if "tty" in needs:
        flags += ["-t"]
    return flags


@pytest.mark.parametrize("rule,script,needs", BEHAVIOURS, ids=[f"{i}-{b[0]}" for i, b in enumerate(BEHAVIOURS)])
async def test_behaviour_raises_its_alert(pipe, actions, rule, script, needs):
    cid = await in_container(script, _flags(needs, actions))
    a = await alert_for(pipe, rule, cid)
    assert a["kind"] == "alert"
    assert a["event"]["container"]["id"] == cid and cid[:12] in a["output"]
    assert a["priority"] and a["tags"]


async def test_ordinary_activity_raises_nothing(pipe):
    # In a container: ordinary commands, then a sentinel that does alert. Events of
    # one container arrive in order, so once the sentinel's alert is here every
    # earlier event of the container has been evaluated.
    cid = await in_container("ls / >/dev/null; cat /etc/hostname; echo hi; sleep 0.2; touch /tmp/x; "
                             "cat /etc/passwd >/dev/null; cat /etc/shadow >/dev/null", check=True)
    sentinel = await alert_for(pipe, "Read sensitive file", cid)
    mine = pipe._by_subject["eunomia.alert.>"].matching(lambda a: (a.get("container") or {}).get("id") == cid)
    assert [a["rule"] for a in mine] == ["Read sensitive file"], [a["output"] for a in mine]
    assert sentinel["event"]["comm"] == "cat"
    # On the host: the same, by a shell we start; its children's alerts are filtered by parent pid.
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "ls / >/dev/null; cat /etc/hostname >/dev/null; echo hi >/dev/null; sleep 0.2; "
                    "cat /etc/shadow >/dev/null")
    await proc.wait()

    def host_alert(a):
        e = a.get("event") or {}
        return a.get("container") is None and proc.pid in (e.get("pid"), e.get("ppid"))
    await pipe.collect("eunomia.alert.>", lambda a: host_alert(a) and a["rule"] == "Read sensitive file",
                       n=1, timeout=20)
    host = pipe._by_subject["eunomia.alert.>"].matching(host_alert)
    assert [a["rule"] for a in host] == ["Read sensitive file"], [a["output"] for a in host]


async def test_ordinary_container_options_raise_nothing(pipe, tmp_path):
    # a data volume and harmless added capabilities are not a sensitive mount or excessive capabilities
    cid = await in_container("ls /data >/dev/null; cat /etc/shadow >/dev/null",
                             ["-v", f"{tmp_path}:/data", "--cap-add", "NET_RAW", "--cap-add", "AUDIT_WRITE"],
                             check=True)
    await alert_for(pipe, "Read sensitive file", cid)  # the sentinel: every earlier event is evaluated
    mine = pipe._by_subject["eunomia.alert.>"].matching(lambda a: (a.get("container") or {}).get("id") == cid)
    assert [a["rule"] for a in mine] == ["Read sensitive file"], [a["output"] for a in mine]


async def test_alerter_counted_what_it_did(pipe):
    s = pipe.alerter.stats
    assert s.total("events_evaluated_total") > 0 and s.total("alerts_total") > 0
    assert s.total("bus_malformed_total") == 0
