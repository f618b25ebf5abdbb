"""The filter plan compiled from rules is a superset: every event a rule
matches is one the plan lets through (checked over many generated events,
with the default ruleset and with rules using every bounded form), and it
is as narrow as the rules allow."""
from __future__ import annotations

import itertools
import random

import pytest

from services.alerter.config import DEFAULT_RULES_DIR, rule_files
from services.alerter.engine import load_rules, load_rules_text
from services.probe.paths import absolute
from shared.filterplan import CLIMBING, PATH_KINDS, FilterPlan, PlanError, climbs, judged_path, open_access

FORMS = """
- list: keys
  items: [id_rsa, id_ed25519]
- macro: ssh_dir
  condition: (fd.name startswith /root/.ssh/ or fd.name glob "/home/*/.ssh/*")
- rule: ssh keys
  desc: t
  condition: evt.type = open and evt.is_open_read = true and (ssh_dir or fd.filename in (keys))
  output: x
  priority: WARNING
- rule: cron
  desc: t
  condition: evt.type in (open, unlink) and (fd.directory pmatch (/etc/cron.d, /var/spool/cron) or fd.name = /etc/crontab)
  output: x
  priority: WARNING
- rule: history
  desc: t
  condition: >
    ((evt.type = open and evt.is_open_trunc = true) or evt.type = unlink)
    and fd.name endswith "_history" and not proc.name = bash
  output: x
  priority: WARNING
- rule: proc mem
  desc: t
  condition: evt.type = open and fd.name glob "/proc/*/mem" and proc.pid != 1
  output: x
  priority: WARNING
- rule: exception
  desc: t
  condition: evt.type = open and evt.is_open_create = true and fd.directory = /srv/drop
  exceptions:
    - name: ok
      fields: [proc.name]
      values: [[tar]]
  output: x
  priority: WARNING
- rule: climbs to secrets
  desc: t
  condition: evt.type = open and fd.nameraw contains "../" and fd.name startswith /srv/secret/
  output: x
  priority: WARNING
- rule: any climb unlinked
  desc: t
  condition: evt.type = unlink and fd.nameraw glob "*../*"
  output: x
  priority: WARNING
"""

PATHS = ["/etc/shadow", "/etc/shadowx", "/etc/passwd", "/etc/sudoers.d/x", "/bin/ls", "/binx", "/var/log/syslog",
         "/sys/fs/cgroup/release_agent", "/tmp/release_agent", "/root/.ssh/id_rsa", "/root/.ssh", "/home/a/.ssh/k",
         "/home/a/id_ed25519", "/etc/cron.d", "/etc/cron.d/job", "/var/spool/cron/root", "/etc/crontab",
         "/root/.bash_history", "/x/zsh_history", "/proc/12/mem", "/proc/self/mem", "/proc/12/maps",
         "/srv/drop/payload", "/srv/dropx", "/usr/lib/x.so", "/tmp/a", "relative", "/etc//shadow",
         "id_rsa", ".ssh/id_ed25519", "shadow", "crontab", "x_history", "release_agent", "cron.d/job"]
FLAGS = [0, 1, 2, 0o100, 0o101, 0o1001, 0o1000, 0o102, 0o2000]


def events():
    rnd = random.Random(7)
    for kind, path, flags in itertools.product(PATH_KINDS + ("rename", "exec"), PATHS, FLAGS):
        for ctr in (None, {"id": "c" * 64, "name": "c", "image": "i"}):
            name = rnd.choice(["cat", "bash", "tar", "sh", "apt"])
            ev = {"id": "x", "ts": 1, "node": "n", "kind": kind, "pid": 5, "ppid": 1, "uid": 0, "gid": 0,
                  "comm": name, "path": path, "newpath": path, "oldpath": path, "flags": flags, "mode": 0o4755,
                  "ret": 0, "container": ctr, "k8s": None,
                  "proc": {"name": name, "exe": "/bin/" + name, "args": [name],
                           "pname": rnd.choice(["sh", "nginx"])}}  # rules that exempt shells' children too
            yield ev, (open_access(flags) if kind == "open" else 1)


# (argument as written, directory it is relative to): the kernel judges judged_path(), rules see
# it normalised (services/probe/paths.py)
ARGS = [("shadow", "/etc"), ("../etc/shadow", "/tmp"), ("./shadow", "/etc"), ("/etc//shadow", None),
        ("/etc/./shadow", None), ("/tmp/../etc/shadow", None), ("id_rsa", "/root/.ssh"), (".ssh/id_rsa", "/root"),
        ("release_agent", "/sys/fs/cgroup"), ("job", "/etc/cron.d"), ("cron.d/job", "/etc"),
        ("mem", "/proc/12"), ("12/mem", "/proc"), ("payload", "/srv/drop"), ("x", "/"), ("etc/shadow", "/"),
        ("shadow", None), ("../../../etc/shadow", "/var/lib"), ("a/../../shadow", "/etc/x"), ("..", "/etc/ssh"),
        ("./.././../root/.ssh/id_rsa", "/srv/app"), ("../" * 9 + "etc/shadow", "/a/b/c/d/e/f/g/h/i"),
        ("../.ssh/authorized_keys", "/root/x"), ("../secret/k", "/srv/app"), ("secret/k", "/srv"),
        ("../x", "/tmp/y"), ("x/../y", "/tmp"), ("a../b../shadow", "/etc"), ("/etc/a../b../shadow", None),
        ("x../y", "/tmp/z")]


@pytest.mark.parametrize("which", ["default", "forms"])
def test_plan_judges_the_path_rules_see(which):
    """Relative, dirfd-relative and non-canonical arguments: whenever a rule matches the normalised
    path the event carries, the plan wants the path the kernel judged."""
    rs = load_rules(rule_files((DEFAULT_RULES_DIR,))) if which == "default" else load_rules_text(FORMS)
    plan = FilterPlan.from_dict(rs.filter_plan("t").to_dict())
    matched = 0
    for ev, acc in events():
        if ev["kind"] not in PATH_KINDS:
            continue
        for raw, base in ARGS:
            ev = dict(ev, path=absolute(raw, base), raw_path=raw)
            if rs.evaluate(ev):
                matched += 1
                assert plan.wants(ev["kind"], judged_path(raw, base), acc, climbs=climbs(raw)), \
                    (ev["kind"], raw, base, oct(ev["flags"]))
    assert matched > 20


@pytest.mark.parametrize("which", ["default", "forms"])
def test_plan_lets_through_every_event_a_rule_matches(which):
    rs = load_rules(rule_files((DEFAULT_RULES_DIR,))) if which == "default" else load_rules_text(FORMS)
    plan = FilterPlan.from_dict(rs.filter_plan("t").to_dict())  # through its wire form
    matched = 0
    for ev, acc in events():
        if rs.evaluate(ev):
            matched += 1
            assert plan.wants(ev["kind"], ev.get("path"), acc), (ev["kind"], ev["path"], oct(ev["flags"]))
    assert matched > 20


def test_plan_is_narrow_where_rules_are():
    plan = load_rules_text(FORMS).filter_plan("t")
    assert plan.kinds >= {"open", "unlink", "exec", "fork", "exit"} and "connect" not in plan.kinds
    # every rule bounds its paths, but one that asks for any unlink that climbs
    assert plan.any_path == {"unlink": 7 << CLIMBING}
    want = plan.wants
    assert want("open", "/root/.ssh/config") and want("open", "/home/bob/.ssh/authorized_keys")
    assert want("open", "/data/id_rsa") and not want("open", "/data/id_rsa.pub")
    assert not want("open", "/usr/lib/libc.so.6") and not want("open", "/etc/cron.dx")
    assert want("unlink", "/etc/cron.d/job") and not want("unlink", "/tmp/x")
    assert want("open", "/var/x/zsh_history", 2) and not want("open", "/var/x/zsh_history", 1)
    assert want("open", "/proc/1/mem") and want("open", "/proc/1/maps")  # glob: up to the wildcard
    assert want("open", "/srv/drop/x", 4) and not want("open", "/srv/drop/x", 1)
    # relative paths the kernel could not resolve and non-canonical ones go to user space
    assert want("open", "id_rsa.pub") and want("open", "keys/id_rsa")
    assert want("open", "/usr//lib/x") and want("open", "/usr/lib/../x")
    # resolved ones are judged as <base>/<path>
    assert want("open", judged_path("id_rsa", "/data")) and not want("open", judged_path("id_rsa.pub", "/data"))
    assert not want("open", judged_path("libc.so.6", "/usr/lib"))
    assert want("open", judged_path("config", "/root/.ssh")) and want("open", judged_path(".ssh/config", "/root"))


def test_climbing_rules_want_only_paths_that_climb():
    """fd.nameraw contains "../": the kernel folds a relative path's leading `../` and judges the
    folded path by the classes wanted when a path climbs; with a path test, only for that path."""
    plan = FilterPlan.from_dict(load_rules_text(FORMS).filter_plan("t").to_dict())

    def want(kind, raw, base, acc=1):
        return plan.wants(kind, judged_path(raw, base), acc, climbs=climbs(raw))
    assert want("open", "../secret/k", "/srv/app") and want("open", "./../../srv/secret/k", "/a/b")
    assert not want("open", "secret/k", "/srv")      # no climb: the rule's nameraw test fails
    assert not want("open", "../x", "/srv/app")      # climbs, to a path the rule does not bound
    assert want("unlink", "../anything", "/tmp/a") and not want("unlink", "anything", "/tmp/a")
    assert want("unlink", "a/../b", "/tmp")          # a `..` further on: always sent
    assert plan.to_dict()["climbing"] is True
    old = plan.to_dict()
    del old["climbing"]  # from an alerter that relied on every `..` being sent
    assert FilterPlan.from_dict(old).wants("open", "/usr/x", 1, climbs=True)
    assert not FilterPlan.from_dict(old).wants("open", "/usr/x", 1)


@pytest.mark.parametrize("op,value,forces", [
    ("contains", "../", True), ("contains", "/../", True), ("startswith", "../", True), ("=", "../x", True),
    ("endswith", "/..", False), ("contains", "..", False), ("icontains", "../", False), ("regex", "\\.\\./", False),
    ("glob", "*../*../*", True), ("glob", "../*", True), ("glob", "*..*", False),
    ("glob", "*[]../]etc/shadow", False), ("glob", "*[.]./*", False), ("glob", "*..[/]*", False),
])
def test_only_nameraw_tests_that_force_a_climb_are_climbing_only(op, value, forces):
    """fd.nameraw tests compile to the climbing classes only when every argument they hold for has
    a `../` in it (fnmatch's `[]../]` is one bracket class: no `../` forced); others are unbounded."""
    from services.alerter.engine.plan import _forces_dotdot_slash
    assert _forces_dotdot_slash(op, value) == forces
    rule = f"""
- rule: r
  desc: t
  condition: evt.type = open and fd.nameraw {op} "{value}"
  output: x
  priority: WARNING
"""
    try:
        plan = load_rules_text(rule).filter_plan("t")
    except Exception:  # an operator the engine does not take for strings: nothing to compile
        return
    assert plan.any_path["open"] == (7 << CLIMBING if forces else 7)


def test_unbounded_conditions_widen_and_are_named():
    plan = load_rules_text("""
- rule: anywhere
  desc: t
  condition: evt.type = open and fd.name contains secret
  output: x
  priority: WARNING
- rule: never on paths
  desc: t
  condition: evt.type = connect and fd.sip = 1.2.3.4
  output: x
  priority: WARNING
""").filter_plan("t")
    assert plan.any_path == {"open": 7} and plan.full == {"open read|write|create": ["anywhere"]}
    assert "connect" in plan.kinds and "unlink" not in plan.kinds


def test_default_plan_keeps_reads_bounded():
    plan = load_rules(rule_files((DEFAULT_RULES_DIR,))).filter_plan("t")
    assert not plan.any_path.get("open", 0) & 1, plan.full  # no default rule needs every read
    assert not plan.wants("open", "/usr/share/nginx/html/index.html", 1)


def test_bad_plans_are_refused_with_the_reason():
    with pytest.raises(PlanError, match="plan.kinds"):
        FilterPlan.from_dict({"kinds": "open"})
    with pytest.raises(PlanError, match=r"patterns\[0\].*absolute"):
        FilterPlan.from_dict({"kinds": ["open"], "patterns": [["open", "prefix", "etc/", 1]]})
    with pytest.raises(PlanError, match="any_path"):
        FilterPlan.from_dict({"kinds": ["open"], "any_path": {"open": 99}})


def test_too_many_patterns_widen_the_busiest_kind_instead_of_overflowing_the_kernel():
    from shared.filterplan import MAX_PATTERNS
    paths = ", ".join(f"/srv/f{i}" for i in range(MAX_PATTERNS + 10))
    plan = load_rules_text(f"""
- list: big
  items: [{paths}]
- rule: many
  desc: t
  condition: evt.type = open and fd.name in (big)
  output: x
  priority: WARNING
- rule: few
  desc: t
  condition: evt.type = unlink and fd.name startswith /etc/
  output: x
  priority: WARNING
""").filter_plan("t")
    assert plan.any_path == {"open": 7} and len(plan.patterns) == 1
    assert any("path patterns in all" in r for r in plan.full["open read|write|create"])
    FilterPlan.from_dict(plan.to_dict())  # what the probes accept


ENV_RULES = """
- macro: preload
  condition: proc.env[LD_PRELOAD] exists
- rule: env
  desc: t
  condition: evt.type = execve and (preload or proc.env[GLIBC_TUNABLES] exists)
  output: x
  priority: WARNING
"""


def test_env_names_come_from_the_rules_that_read_them():
    from shared.filterplan import DANGEROUS_ENV
    plan = load_rules_text(ENV_RULES).filter_plan("t")
    assert plan.env == ("GLIBC_TUNABLES", "LD_PRELOAD") and "execenv" in plan.kinds
    # proc.env without a name watches the dangerous set
    bare = load_rules_text(ENV_RULES.replace("proc.env[GLIBC_TUNABLES] exists", 'proc.env contains "x"'))
    assert set(bare.filter_plan("t").env) == set(DANGEROUS_ENV) | {"LD_PRELOAD"}
    # no rule reads the environment: nothing is looked for and no execenv event is sent
    none = load_rules_text(FORMS).filter_plan("t")
    assert none.env == () and "execenv" not in none.kinds
    assert FilterPlan.from_dict(plan.to_dict()) == plan
    for bad in (["A=B"], [""], "LD_PRELOAD", [1]):
        with pytest.raises(PlanError, match="plan.env"):
            FilterPlan.from_dict({**plan.to_dict(), "env": bad})


def test_env_key_is_the_kernels():
    """bpf/process.bpf.c env_key: the first 8 bytes of "NAME=value", cut after '='."""
    from shared.filterplan import env_key

    def kernel_key(var: bytes) -> int:
        head = var[:8].ljust(8, b"\0")
        for j, c in enumerate(head):
            if c in (0, ord("=")):
                head = head[:j + 1].ljust(8, b"\0")
                break
        return int.from_bytes(head, "little")
    for name in ("LD_PRELOAD", "HISTFILE", "ENV", "ABCDEFG", "PATH"):
        assert env_key(name) == kernel_key(f"{name}=some value".encode()), name
    assert env_key("HISTFILE") == kernel_key(b"HISTFILESIZE=0")  # a shared prefix: user space tells them apart
    assert env_key("ENV") != kernel_key(b"ENVX=1") and env_key("PATH") != kernel_key(b"PATHS=1")


def test_truncate_rules_judge_paths_and_send_no_opens():  # ftruncate's fd: the kernel walks its path
    rs = load_rules_text("""
- rule: t
  desc: t
  condition: evt.type = truncate and fd.filename = .bash_history
  output: x
  priority: WARNING
""")
    plan = rs.filter_plan("t")
    assert plan.wants("truncate", "/root/.bash_history") and not plan.wants("truncate", "/root/.profile")
    assert "open" not in plan.kinds
    assert "chown" in PATH_KINDS and "truncate" in PATH_KINDS


SCOPED = """
- macro: container
  condition: (container.id != host)
- macro: in_ctr
  condition: container
- rule: mounts in containers
  desc: t
  condition: evt.type = mount and in_ctr
  output: x
  priority: WARNING
- rule: sockets, container by negation
  desc: t
  condition: evt.type = socket and not container.id = host
  output: x
  priority: WARNING
- rule: unshare in a container, or setns anywhere
  desc: t
  condition: (evt.type = unshare and container) or evt.type = setns
  output: x
  priority: WARNING
- rule: mkdir in a container
  desc: t
  condition: evt.type = mkdir and container and fd.name startswith /srv/
  output: x
  priority: WARNING
- rule: mkdir on the host too
  desc: t
  condition: evt.type = mkdir and fd.name startswith /etc/
  output: x
  priority: WARNING
- rule: execs in containers
  desc: t
  condition: evt.type = exec and container
  output: x
  priority: WARNING
"""


def test_kinds_every_rule_asks_from_a_container_are_scoped():
    plan = load_rules_text(SCOPED).filter_plan("t")
    # mkdir: one rule also wants the host; setns: one branch has no container test; exec: the
    # process table needs every process
    assert plan.containers_only == {"mount", "socket", "unshare"}
    assert plan.wants("mount", None) and not plan.wants("mount", None, host=True)
    assert plan.wants("mkdir", "/etc/x", host=True) and plan.wants("exec", None, host=True)
    again = FilterPlan.from_dict(plan.to_dict())
    assert again.containers_only == plan.containers_only
    with pytest.raises(PlanError, match="containers_only"):
        FilterPlan.from_dict({"kinds": ["mount"], "containers_only": "mount"})
    assert FilterPlan.from_dict({"kinds": ["mount"], "containers_only": ["mount", "socket"]}).containers_only \
        == {"mount"}  # only kinds the plan has


def test_default_plan_scopes_container_rules():
    plan = load_rules(rule_files((DEFAULT_RULES_DIR,))).filter_plan("t")
    assert {"mount", "unshare", "setns", "mprotect"} <= plan.containers_only
    assert not plan.containers_only & {"exec", "exit", "fork", "chdir", "dns", "open", "procvm"}
