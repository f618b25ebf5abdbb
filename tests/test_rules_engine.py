"""Rules engine: condition operators and field families on realistic
enriched events (shapes from shared/schema.py). Plain pytest, no bus."""
from __future__ import annotations

import pytest

from services.alerter.engine import RuleError, load_rules_text
from tests.events import container, enriched_event, proc_view

CID = "3f2a9c0d1e4b5a6978877665544332211001122334455667788990aabbccddeeff"


def make_event(kind: str, *, container_: bool = True, **kw) -> dict:
    """An enriched event as the enricher publishes it."""
    ev = enriched_event(
        kind, ts=1_764_083_000_123_456_789, pid=4242, ppid=4200, comm="bash", cgroup_id=9001,
        proc=proc_view("/bin/bash", ["bash", "-c", "cat /etc/shadow"], ppid=4200, cwd="/root",
                       pexe="/usr/sbin/sshd", pargs=["sshd", "-D"],
                       ancestors=[{"pid": 4200, "comm": "sshd", "exe": "/usr/sbin/sshd", "args": ["sshd", "-D"]},
                                  {"pid": 1, "comm": "systemd", "exe": "/sbin/init", "args": ["/sbin/init"]}]),
        ctr=container("web-1", CID, image="registry.local:5000/team/nginx:1.25@sha256:abc", labels={"app": "web"})
        if container_ else None,
        k8s={"pod": "web-1-abc", "namespace": "shop", "labels": {"tier": "front"}} if container_ else None)
    defaults = {
        "exec": {"filename": "/bin/bash", "argv": ["bash", "-c", "cat /etc/shadow"], "ret": 0},
        "open": {"path": "/etc/shadow", "flags": 0, "mode": 0, "ret": 3},
        "connect": {"family": 2, "daddr": "169.254.169.254", "dport": 80, "saddr": "10.88.0.5",
                    "sport": 41234, "proto": 6, "ret": -101},
        "accept": {"family": 2, "daddr": "10.88.0.9", "dport": 51000, "saddr": "10.88.0.5", "sport": 8080,
                   "proto": 6},
        "listen": {"family": 10, "saddr": "::", "sport": 8080},
        "unlink": {"path": "/var/log/auth.log", "ret": 0},
        "rename": {"oldpath": "/tmp/x", "newpath": "/usr/bin/ls", "ret": 0},
        "symlink": {"target": "/etc/shadow", "path": "/tmp/sh", "ret": 0},
        "link": {"oldpath": "/etc/shadow", "newpath": "/tmp/hl", "ret": 0},
        "chmod": {"path": "/tmp/payload", "mode": 0o4755, "ret": 0},
        "ptrace": {"request": 16, "target_pid": 1, "ret": 0},
        "setuid": {"syscall": "setuid", "new_uid": 0, "new_euid": 0, "new_suid": 0, "ret": 0},
        "mount": {"source": "/dev/sda1", "target": "/mnt", "fstype": "ext4", "flags": 0, "ret": 0},
        "bpf": {"cmd": 5, "prog_type": 2, "ret": 7},
        "module": {"syscall": "finit_module", "name": "rootkit", "fd": 3, "ret": -1},
        "memfd": {"name": "payload", "flags": 1, "ret": 4},
        "unshare": {"flags": 0x10000000, "ret": 0},
        "setns": {"fd": 3, "nstype": 0, "ret": 0},
        "socket": {"family": 17, "type": 3, "protocol": 768, "ret": 3},
        "dup": {"syscall": "dup2", "oldfd": 3, "newfd": 0, "fd_type": "ipv4", "ret": 0},
    }
    ev.update(defaults.get(kind, {}))
    ev.update(kw)
    return ev


def ruleset(condition: str, output: str = "%proc.name", **extra: str):
    text = (f"- rule: r\n  desc: d\n  condition: {condition!r}\n  output: {output!r}\n  priority: WARNING\n"
            + "".join(f"  {k}: {v}\n" for k, v in extra.items()))
    return load_rules_text(text, "t.yaml")


def holds(condition: str, ev: dict) -> bool:
    rs = ruleset(condition)
    assert rs.eval_errors == 0
    res = rs.evaluate(ev)
    assert rs.eval_errors == 0, rs.last_eval_error
    return bool(res)


OPEN = make_event("open")
EXEC = make_event("exec")
CONNECT = make_event("connect")
HOST_EXEC = make_event("exec", container_=False)


@pytest.mark.parametrize("cond,expected", [
    ("proc.name = bash", True), ("proc.name == bash", True), ("proc.name = sh", False),
    ("proc.name != sh", True), ("proc.name != bash", False),
    ("proc.pid > 4000", True), ("proc.pid >= 4242", True), ("proc.pid < 4242", False), ("proc.pid <= 4242", True),
    ("proc.pid = 0x1092", True),
    ("proc.name in (sh, bash, zsh)", True), ("proc.name in (sh, zsh)", False), ("proc.name in ()", False),
    ("proc.cmdline contains shadow", True), ("proc.cmdline contains SHADOW", False),
    ("proc.cmdline icontains SHADOW", True),
    ("proc.exe startswith /bin/", True), ("proc.exe startswith /usr/", False),
    ("proc.exe endswith /bash", True), ("proc.exe endswith sh.", False),
    ("proc.exe glob '/bin/*sh'", True), ("proc.exe glob '/usr/*'", False), ("proc.exe glob '/bin/ba?h'", True),
    ("proc.cwd pmatch (/root, /home)", True), ("proc.cwd pmatch (/roo)", False),
    ("proc.exe pmatch (/bin)", True), ("proc.exe pmatch (/)", True),
    ("proc.cwd exists", True), ("proc.tty exists", False), ("not proc.tty exists", True),
    ("proc.cmdline regex 'cat /etc/(shadow|gshadow)$'", True), ("proc.cmdline regex '^cat'", False),
    ("proc.aname intersects (init, sshd)", True), ("proc.aname intersects (init, cron)", False),
    ("proc.name = bash and proc.pid = 4242", True), ("proc.name = sh or proc.pid = 4242", True),
    ("not proc.name = bash", False), ("not (proc.name = sh or proc.name = zsh)", True),
    ("(proc.name = sh or proc.name = bash) and not proc.pid = 1", True),
    ("proc.name=bash and proc.pid=4242", True),
    ('proc.cmdline = "bash -c cat /etc/shadow"', True), ("proc.cmdline = 'bash -c cat /etc/shadow'", True),
    ("proc.name startswith (zs, ba)", True), ("proc.cmdline contains (nope, shadow)", True),
])
def test_operators(cond: str, expected: bool) -> None:
    assert holds(cond, EXEC) is expected


def test_missing_field_compares_false_except_exists() -> None:
    ev = make_event("exec")
    ev["proc"] = dict(ev["proc"], cwd=None)
    for cond in ("proc.cwd = /root", "proc.cwd != /root", "proc.cwd startswith /", "proc.cwd in (/root)",
                 "proc.cwd contains r", "proc.cwd glob '*'", "proc.cwd exists", "proc.tty > 0"):
        assert not holds(cond, ev), cond
    assert holds("not proc.cwd exists", ev)
    assert holds("not proc.cwd = /root", ev)


def test_evt_type_aliases_map_to_kinds_and_index() -> None:
    rs = ruleset("evt.type in (open, openat, openat2, creat)")
    assert rs.rules[0].kinds == {"open"}
    for alias, kind in [("execve", "exec"), ("execveat", "exec"), ("accept4", "accept"), ("setresuid", "setuid"),
                        ("finit_module", "module"), ("memfd_create", "memfd"), ("unlinkat", "unlink"),
                        ("renameat2", "rename"), ("symlinkat", "symlink"), ("linkat", "link"),
                        ("fchmodat", "chmod"), ("dup3", "dup"), ("connect", "connect"), ("ptrace", "ptrace"),
                        ("mount", "mount"), ("bpf", "bpf"), ("unshare", "unshare"), ("setns", "setns"),
                        ("socket", "socket")]:
        rs = ruleset(f"evt.type = {alias}")
        assert rs.rules[0].kinds == {kind}, alias
        assert rs.evaluate(make_event(kind)), alias
        other = "open" if kind != "open" else "exec"
        assert not rs.evaluate(make_event(other)), alias
    assert ruleset("evt.type != open").rules[0].kinds is None
    assert ruleset("proc.name = bash").rules[0].kinds is None
    assert ruleset("evt.type = open or evt.type = connect").rules[0].kinds == {"open", "connect"}
    assert ruleset("evt.type in (open, connect) and evt.type = open").rules[0].kinds == {"open"}
    assert ruleset("evt.type = open or proc.name = bash").rules[0].kinds is None


def test_event_fields() -> None:
    assert holds("evt.dir = <", OPEN)
    assert holds("evt.time = '15:03:20.123456789'", OPEN)
    assert holds("evt.rawtime = 1764083000123456789", OPEN)
    assert holds("evt.rawres = 3 and evt.res = SUCCESS", OPEN)
    assert holds("evt.rawres < 0 and evt.res = ENETUNREACH and evt.failed = true", CONNECT)
    assert holds("evt.arg.path = /etc/shadow and evt.arg.flags = 0", OPEN)
    assert holds("evt.arg.flags in (0, 1)", OPEN)
    assert holds("evt.arg.dport = 80 and evt.arg.dport > 79", CONNECT)
    assert holds("evt.arg.syscall = dup2", make_event("dup"))
    assert holds("evt.arg.mode = 0o4755", make_event("chmod"))
    assert holds("evt.arg[path] contains shadow", OPEN)


def test_open_flags() -> None:
    ro = make_event("open", flags=0)                       # O_RDONLY
    wo = make_event("open", flags=1 | 0o100 | 0o1000)      # O_WRONLY|O_CREAT|O_TRUNC
    rw = make_event("open", flags=2)
    ex = make_event("open", flags=0o101, mode=0o755)
    assert holds("evt.is_open_read = true", ro) and not holds("evt.is_open_write = true", ro)
    assert holds("evt.is_open_write = true and evt.is_open_read = false", wo)
    assert holds("evt.is_open_write = true and evt.is_open_read = true", rw)
    assert holds("evt.is_open_exec = true", ex) and not holds("evt.is_open_exec = true", wo)
    assert holds("evt.is_open_create = true", wo)
    assert not holds("evt.is_open_write exists", EXEC)


def test_process_fields() -> None:
    assert holds("proc.name = bash and proc.exe = /bin/bash and proc.exepath = /bin/bash", EXEC)
    assert holds("proc.cmdline = 'bash -c cat /etc/shadow'", EXEC)
    assert holds("proc.args = '-c cat /etc/shadow'", EXEC)
    assert holds("proc.pid = 4242 and proc.ppid = 4200 and thread.tid = 4242", EXEC)
    assert holds("proc.pname = sshd and proc.pexe = /usr/sbin/sshd and proc.pcmdline = 'sshd -D'", EXEC)
    assert holds("proc.aname[0] = bash and proc.aname[1] = sshd and proc.aname[2] = systemd", EXEC)
    assert not holds("proc.aname[3] exists", EXEC)
    assert holds("proc.aname = systemd and proc.aname in (cron, sshd)", EXEC)
    assert not holds("proc.aname = cron", EXEC)
    assert holds("proc.apid[1] = 4200 and proc.apid[2] = 1 and proc.apid = 1", EXEC)
    assert holds("proc.cwd = /root", EXEC)
    assert holds("proc.is_exe_upper_layer = false and proc.is_exe_from_memfd = false", EXEC)
    dropped = make_event("exec")
    dropped["proc"] = dict(dropped["proc"], is_exe_upper_layer=True, is_exe_from_memfd=True)
    assert holds("proc.is_exe_upper_layer = true and proc.is_exe_from_memfd = true", dropped)
    assert not holds("proc.is_exe_upper_layer exists", OPEN)
    # Without enrichment: comm, exec filename/argv and the head's ppid still work.
    bare = make_event("exec")
    del bare["proc"]
    assert holds("proc.name = bash and proc.exe = /bin/bash and proc.cmdline = 'bash -c cat /etc/shadow'", bare)
    assert holds("proc.ppid = 4200", bare)
    assert not holds("proc.pname exists", bare)


def test_fd_fields_files() -> None:
    assert holds("fd.name = /etc/shadow and fd.directory = /etc and fd.filename = shadow", OPEN)
    assert holds("fd.type = file and fd.typechar = f", OPEN)
    assert holds("fd.name = /usr/bin/ls and fd.directory = /usr/bin", make_event("rename"))
    assert holds("fd.name = /tmp/sh and evt.arg.target = /etc/shadow", make_event("symlink"))
    assert holds("fd.name = /tmp/hl", make_event("link"))
    assert holds("fd.name = /var/log/auth.log", make_event("unlink"))
    assert holds("fd.name = /tmp/payload", make_event("chmod"))
    assert holds("fd.name = memfd:payload and fd.type = memfd", make_event("memfd"))
    assert not holds("fd.name exists", EXEC)
    assert holds("fd.name pmatch (/etc, /root)", OPEN)


def test_fd_fields_network() -> None:
    c = CONNECT
    assert holds("fd.name = '10.88.0.5:41234->169.254.169.254:80'", c)
    assert holds("fd.sip = 169.254.169.254 and fd.sport = 80 and fd.cip = 10.88.0.5 and fd.cport = 41234", c)
    assert holds("fd.rip = 169.254.169.254 and fd.lip = 10.88.0.5 and fd.rport = 80 and fd.lport = 41234", c)
    assert holds("fd.dip = 169.254.169.254 and fd.dport = 80", c)
    assert holds("fd.type = ipv4 and fd.typechar = 4 and fd.l4proto = tcp", c)
    assert holds("fd.net = 169.254.0.0/16 and fd.snet = 169.254.0.0/16 and fd.cnet = 10.0.0.0/8", c)
    assert not holds("fd.snet = 10.0.0.0/8", c)
    assert holds("fd.net in (192.168.0.0/16, 169.254.169.254)", c)
    assert holds("fd.net != 192.168.0.0/16", c)
    probe_connect = make_event("connect", saddr=None, sport=None, proto=None)   # what the probe sends
    assert holds("fd.name = '->169.254.169.254:80' and fd.sip = 169.254.169.254 and not fd.cip exists",
                 probe_connect)
    assert holds("fd.l4proto = tcp", make_event("socket", family=2, type=1, protocol=0))
    assert holds("fd.l4proto = udp", make_event("socket", family=10, type=2 | 0o2000000, protocol=0))
    a = make_event("accept")
    assert holds("fd.sip = 10.88.0.5 and fd.sport = 8080 and fd.cip = 10.88.0.9 and fd.cport = 51000", a)
    assert holds("fd.type = ipv6 and fd.name = '[::]:8080'", make_event("listen"))
    assert holds("fd.type = packet", make_event("socket"))
    assert holds("fd.type = ipv4", make_event("dup"))
    assert not holds("fd.sip exists", OPEN)


def test_user_group_fields() -> None:
    assert holds("user.uid = 0 and user.name = root and group.gid = 0", EXEC)
    assert not holds("user.name exists", make_event("exec", uid=987654))


def test_container_and_k8s_fields() -> None:
    assert holds(f"container.id = {CID[:12]} and container.full_id = {CID}", EXEC)
    assert holds("container.name = web-1 and container.runtime = podman", EXEC)
    assert holds("container.image = 'registry.local:5000/team/nginx:1.25@sha256:abc'", EXEC)
    assert holds("container.image.repository = registry.local:5000/team/nginx", EXEC)
    assert holds("container.image.tag = '1.25' and container.image.digest = sha256:abc", EXEC)
    assert holds("container.label[app] = web and k8s.pod.label[tier] = front", EXEC)
    assert holds("k8s.ns.name = shop and k8s.pod.name = web-1-abc", EXEC)
    assert holds("container.id = host and container.name = host", HOST_EXEC)
    assert not holds("container.image exists or k8s.ns.name exists", HOST_EXEC)
    assert holds("container.id != host", EXEC) and not holds("container.id != host", HOST_EXEC)


def test_output_rendering_and_fields() -> None:
    rs = ruleset("evt.type = open", output="%proc.name read %fd.name. in %(container.name) tty=%proc.tty "
                                            "anc=%proc.aname[2] net=%fd.sip")
    (m,) = rs.evaluate(OPEN)
    assert m.output == "bash read /etc/shadow. in web-1 tty=<NA> anc=systemd net=<NA>"
    assert m.fields == {"proc.name": "bash", "fd.name": "/etc/shadow", "container.name": "web-1",
                        "proc.tty": None, "proc.aname[2]": "systemd", "fd.sip": None}
    assert (m.rule, m.priority, m.desc, m.tags) == ("r", "WARNING", "d", [])


def test_malformed_events_are_counted_not_raised() -> None:
    rs = ruleset("proc.name = bash and fd.name startswith /etc")
    assert rs.evaluate({"kind": "open", "proc": "not-an-object"}) == []
    assert rs.eval_errors == 1 and "rule 'r'" in rs.last_eval_error
    assert rs.evaluate("nonsense") == []  # type: ignore[arg-type]
    assert rs.eval_errors == 2
    assert rs.evaluate(make_event("open", path=12)) == []   # wrong type of a field
    assert rs.eval_errors == 3
    assert rs.evaluate(OPEN)                                # still works after
    assert rs.evaluate({"kind": "brand-new-kind"}) == []
    assert rs.evaluate({"kind": ["open"]}) == [] and rs.eval_errors == 4


def test_kind_index_runs_only_candidate_rules() -> None:
    rs = load_rules_text("""
- rule: opens
  condition: evt.type = open
  output: o
  priority: INFO
- rule: any
  condition: proc.name = bash
  output: a
  priority: DEBUG
- rule: conns
  condition: evt.type = connect and fd.sport = 80
  output: c
  priority: ERROR
""")
    assert [r.name for r in rs.kinds_index["open"]] == ["opens", "any"]
    assert [r.name for r in rs.kinds_index["connect"]] == ["any", "conns"]
    assert [r.name for r in rs.kinds_index["ptrace"]] == ["any"]
    assert [m.rule for m in rs.evaluate(OPEN)] == ["opens", "any"]
    assert [m.rule for m in rs.evaluate(CONNECT)] == ["any", "conns"]
    assert [m.priority for m in rs.evaluate(CONNECT)] == ["DEBUG", "ERROR"]
    for ev in (OPEN, CONNECT, EXEC, make_event("ptrace")):
        assert [m.rule for m in rs.evaluate(ev)] == [m.rule for m in rs.evaluate_all(ev)]


@pytest.mark.parametrize("cond,reason", [
    ("proc.nme = bash", "unknown field 'proc.nme'"),
    ("proc.name === bash", "needs a value"),
    ("proc.name equals bash", "bad operator 'equals'"),
    ("proc.pid > abc", "proc.pid is a number"),
    ("proc.name < 3", "needs a numeric field"),
    ("proc.pid contains 3", "needs a text field"),
    ("evt.type = frobnicate", "unknown event type 'frobnicate'"),
    ("evt.type startswith op", "not supported for evt.type"),
    ("evt.is_open_write = maybe", "true or false"),
    ("fd.net = notanet", "not an IP network"),
    ("proc.cmdline regex '('", "bad regex"),
    ("proc.name = bash and", "expected a condition"),
    ("proc.name in (a, b", "unterminated list"),
    ("(proc.name = bash", "expected ')'"),
    ("proc.name = 'bash", "unterminated string"),
    ("proc.name = bash bash", "unexpected 'bash'"),
    ("evt.arg.nosuch = 1", "unknown event argument"),
    ("proc.aname[x] = a", "index must be a number"),
    ("proc.name", "field 'proc.name' needs an operator"),
    ("no_such_macro", "unknown macro 'no_such_macro'"),
    ("proc.name = (a, b)", "takes one value, not a list"),
    ("proc.pid > (1, 2)", "takes one value, not a list"),
])
def test_condition_errors(cond: str, reason: str) -> None:
    with pytest.raises(RuleError) as ei:
        ruleset(cond)
    assert reason in ei.value.reason
    assert ei.value.file == "t.yaml" and ei.value.line == 3


def test_per_kind_code_agrees_with_generic_code_on_a_mixed_stream() -> None:
    """The kind-specialised functions must match exactly what the generic
    ones match, for the shipped ruleset and the benchmark's generated one."""
    from pathlib import Path

    from bench.rules_bench import DEFAULT_RULES, generated_rules, make_events
    from services.alerter.engine import load_rules

    sets = [load_rules_text(generated_rules(), "<generated>")]
    if list(Path(DEFAULT_RULES).glob("*.yaml")):
        sets.append(load_rules([DEFAULT_RULES]))
    events = make_events(3000, seed=11)
    for rs in sets:
        total = 0
        for ev in events:
            got = [(m.rule, m.output) for m in rs.evaluate(ev)]
            assert got == [(m.rule, m.output) for m in rs.evaluate_all(ev)], ev
            total += len(got)
        assert total > 100 and rs.eval_errors == 0
        fired = {m.rule for ev in events for m in rs.evaluate(ev)}
        assert len(fired) >= 5, fired


def test_list_name_without_parentheses_and_partly_unknown_event_types() -> None:
    rs = load_rules_text("""
- list: shells
  items: [bash, sh]
- rule: r
  desc: d
  condition: evt.type in (execve, sendto, frobnicate) and proc.name in shells
  output: o
  priority: INFO
""")
    assert rs.rules[0].kinds == {"exec"} and rs.evaluate(EXEC)
    assert any("sendto" in w for w in rs.warnings)


def test_events_of_any_shape_never_raise() -> None:
    import random

    from bench.rules_bench import generated_rules

    rs = load_rules_text(generated_rules(), "<generated>")
    rnd = random.Random(3)
    junk = [None, 0, -1, "", "x", [], {}, ["a"], {"a": 1}, 3.5, True]
    base = [make_event(k) for k in ("exec", "open", "connect", "dup", "ptrace", "chmod")]
    for i in range(2000):
        ev = dict(rnd.choice(base))
        for _ in range(rnd.randint(1, 3)):
            key = rnd.choice(list(ev))
            if key != "kind":
                ev[key] = rnd.choice(junk)
        if i % 3 == 0 and isinstance(ev.get("proc"), dict) and ev["proc"]:
            ev["proc"] = {**ev["proc"], rnd.choice(list(ev["proc"])): rnd.choice(junk)}
        rs.evaluate(ev)
    assert rs.eval_errors > 0          # counted, not raised


def test_setid_args_env_and_tty_fields() -> None:
    """evt.arg.uid on set*id reads the id asked for, user.uid the caller's before the call;
    proc.env[NAME] and proc.tty read what the enricher keeps on the process."""
    su = make_event("setuid", uid=1000, new_uid=0, new_euid=None)
    assert holds("evt.arg.uid = 0 and user.uid = 1000", su)
    assert not holds("evt.arg.euid exists", su)
    assert holds("evt.arg.uid = 0", make_event("open", uid=0))  # elsewhere: the head's uid
    ex = make_event("exec")
    ex["proc"] = {**ex["proc"], "env": {"LD_PRELOAD": "/tmp/x.so"}, "tty": 34816}
    assert holds("proc.env[LD_PRELOAD] startswith /tmp/ and proc.tty != 0", ex)
    assert holds('proc.env contains "LD_PRELOAD=/tmp/x.so"', ex)
    assert not holds("proc.env[HISTFILE] exists", ex)
    ex["proc"] = {**ex["proc"], "env": None, "tty": None}
    assert not holds("proc.env[LD_PRELOAD] exists or proc.tty != 0 or proc.env exists", ex)
    for kind, alias in (("chown", "fchownat"), ("truncate", "ftruncate"), ("procvm", "process_vm_writev"),
                        ("umount", "umount2")):
        assert holds(f"evt.type = {alias}", make_event(kind))


def test_a_field_several_rules_read_is_read_once_per_event_and_only_when_needed() -> None:
    from services.alerter.engine.runner import build_runner

    class Rule:
        def __init__(self, name: str) -> None:
            self.name = name

        def match(self, ev):
            return self.name
    calls: list[str] = []

    def path(ev):
        calls.append("path")
        if ev.get("boom"):
            raise ValueError("boom")
        return ev["path"]
    ns = {"f0": path, "f1": lambda ev: ev["kind"], "__builtins__": {"any": any}}
    run = build_runner("t", [("f1(ev) == 'open' and f0(ev).startswith('/etc')", Rule("a")),
                             ("f0(ev) == '/etc/shadow'", Rule("b")),
                             ("f1(ev) == 'exec' and f0(ev) == 'never read'", Rule("c")),
                             ("any(c == 'x' for c in f0(ev))", Rule("d"))],    # an iterable: plain reads
                       ns)
    out: list = []
    errors: list = []
    run({"kind": "open", "path": "/etc/shadow"}, out, lambda r, e: errors.append((r.name, str(e))))
    assert out == ["a", "b"] and errors == []
    assert calls == ["path", "path"]          # once for a and b (c never reads it), again for d's iterable
    calls.clear()
    run({"kind": "open", "path": "/x", "boom": True}, out, lambda r, e: errors.append((r.name, str(e))))
    assert errors == [("a", "boom"), ("b", "boom"), ("d", "boom")]    # a read that raised is not kept
