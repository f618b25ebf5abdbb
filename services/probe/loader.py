"""Compile every bpf/*.bpf.c into one bcc object and attach its tracepoints.

All sources are concatenated after bpf/common.h (with #line markers, so
compiler errors name the real file and line), each after the files it names
on a `// needs: a.bpf.c b.bpf.c` line (helpers, maps and constants it uses
from them); a file whose needs are dropped is dropped too. Before compiling, every
tracepoint a file uses is looked up in tracefs: a missing one that the file
guards with `#if HAVE_TP(cat, name)` only disables that part; a missing one
that is not guarded drops the whole file. Either way the probe carries on
with the rest and reports what is missing, naming the tracepoint.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from shared import log

_log = log.get("probe.loader")

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

_TP_PROBE = re.compile(r"^\s*TRACEPOINT_PROBE\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)
_SYS_EXIT = re.compile(r"^\s*SYS_EXIT\(\s*(\w+)\s*,", re.M)  # bpf/common.h: syscalls:sys_exit_<event>
_TP_GUARD = re.compile(r"HAVE_TP\(\s*(\w+)\s*,\s*(\w+)\s*\)")
_NEEDS = re.compile(r"^// needs: (.+)$", re.M)


class ProbeLoadError(RuntimeError):
    """The probe cannot run here; the message says what is missing and how to fix it."""


@dataclass
class SourcePlan:
    files: list[Path] = field(default_factory=list)        # compiled, in order
    dropped: dict[str, str] = field(default_factory=dict)  # file name -> why
    missing: list[str] = field(default_factory=list)       # "cat:name" not in tracefs
    present: set[str] = field(default_factory=set)         # "cat:name" found
    errors: list[str] = field(default_factory=list)        # human-readable, one per problem

    def has(self, name: str) -> bool:
        """Whether bpf/`name` (e.g. "file.bpf.c") is among the compiled files."""
        return any(p.name == name for p in self.files)


# Tracepoints an `#elif` uses on kernels that lack the newer one (its value): not missing then.
ALTERNATIVES = {"io_uring:io_uring_submit_sqe": "io_uring:io_uring_submit_req"}


def tracefs_root() -> Path:
    """The mounted tracefs, or ProbeLoadError saying how to mount it."""
    for root in TRACEFS_CANDIDATES:
        if (root / "events").is_dir():
            return root
    raise ProbeLoadError("tracefs is not mounted (no /sys/kernel/tracing/events): run "
                         "`mount -t tracefs nodev /sys/kernel/tracing` as root (deploy/bootstrap.sh does)")


def plan_sources(bpf_dir: Path = BPF_DIR, tracefs: Path | None = None) -> SourcePlan:
    """Decide which bpf/*.bpf.c files and guarded sections can be compiled here."""
    events = (tracefs or tracefs_root()) / "events"
    plan = SourcePlan()
    for path, text in load_order(bpf_dir, plan):
        gone = [d for d in needs(text) if d in plan.dropped]  # dropped below for a missing tracepoint
        if gone:
            drop(plan, path.name, f"needs {gone[0]} ({plan.dropped[gone[0]]})")
            continue
        used = tracepoints_used(text)
        guarded = {f"{c}:{e}" for c, e in _TP_GUARD.findall(text)}
        for tp in sorted(used | guarded):
            cat, name = tp.split(":")
            if (events / cat / name).is_dir():
                plan.present.add(tp)
            elif tp not in plan.missing:
                plan.missing.append(tp)
        fatal = sorted(tp for tp in used - guarded if tp in plan.missing)
        if fatal:
            drop(plan, path.name, f"tracepoint {fatal[0]} not found in {events}")
            continue
        for tp in sorted(guarded & set(plan.missing)):
            if (events / ALTERNATIVES.get(tp, "-").replace(":", "/")).is_dir():
                continue  # an older kernel's name of a tracepoint this one has under its own name
            plan.errors.append(f"{path.name}: tracepoint {tp} not found in {events}; the part using it is disabled")
        plan.files.append(path)
    return plan


def tracepoints_used(text: str) -> set[str]:
    """The tracepoints ("cat:name") a source attaches programs to."""
    return ({f"{c}:{e}" for c, e in _TP_PROBE.findall(text)}
            | {f"syscalls:sys_exit_{e}" for e in _SYS_EXIT.findall(text)})


def needs(text: str) -> list[str]:
    """The files a source names on its `// needs:` lines."""
    return [n for line in _NEEDS.findall(text) for n in line.split()]


def load_order(bpf_dir: Path, plan: SourcePlan) -> list[tuple[Path, str]]:
    """bpf_dir's *.bpf.c (path, text), each after what it needs (by name otherwise); one that
    needs a file that is not there, or itself through others, is dropped and named in `plan`."""
    texts = {p.name: (p, p.read_text()) for p in sorted(Path(bpf_dir).glob("*.bpf.c"))}
    order: list[tuple[Path, str]] = []
    placed: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> str | None:
        """None once `name` is placed, else why it cannot be."""
        if name in placed:
            return None
        if name in plan.dropped:
            return plan.dropped[name]
        if name in chain:
            return "a cycle: " + " -> ".join((*chain, name))
        if name not in texts:
            return f"not in {bpf_dir}"
        path, text = texts[name]
        for dep in needs(text):
            why = visit(dep, (*chain, name))
            if why is not None:
                drop(plan, name, f"needs {dep} ({why})")
                return plan.dropped[name]
        placed.add(name)
        order.append((path, text))
        return None

    for name in texts:
        visit(name, ())
    return order


def drop(plan: SourcePlan, name: str, why: str) -> None:
    plan.dropped[name] = why
    plan.errors.append(f"{name}: {why}; all of {name} is disabled")


def program_text(plan: SourcePlan, bpf_dir: Path = BPF_DIR) -> str:
    parts = []
    for path in [Path(bpf_dir) / "common.h", *plan.files]:
        parts.append(f'#line 1 "bpf/{path.name}"\n{path.read_text()}\n')
    return "".join(parts)


# Kernel struct members the programs read (path resolution, the ia32 check, credentials, fds,
# namespaces; bpf/common.h and bpf/*.bpf.c), as -DOFF_<name>=<bytes> from the running kernel's BTF.
KERNEL_OFFSETS = {
    "TASK_FS": ("task_struct", "fs"), "TASK_FILES": ("task_struct", "files"),
    "TASK_TI": ("task_struct", "thread_info"), "TI_STATUS": ("thread_info", "status"),
    "FS_PWD": ("fs_struct", "pwd"), "FS_ROOT": ("fs_struct", "root"),
    "FILES_FDT": ("files_struct", "fdt"), "FDT_FD": ("fdtable", "fd"), "FDT_MAX": ("fdtable", "max_fds"),
    "FILE_PATH": ("file", "f_path"), "PATH_MNT": ("path", "mnt"), "PATH_DENTRY": ("path", "dentry"),
    "DENTRY_PARENT": ("dentry", "d_parent"), "DENTRY_NAME": ("dentry", "d_name"),
    "QSTR_LEN": ("qstr", "len"), "QSTR_NAME": ("qstr", "name"),
    "MOUNT_MNT": ("mount", "mnt"), "MOUNT_PARENT": ("mount", "mnt_parent"),
    "MOUNT_MOUNTPOINT": ("mount", "mnt_mountpoint"), "VFSMOUNT_ROOT": ("vfsmount", "mnt_root"),
    "VFSMOUNT_FLAGS": ("vfsmount", "mnt_flags"),
    "TASK_NSPROXY": ("task_struct", "nsproxy"), "NSPROXY_MNT": ("nsproxy", "mnt_ns"),
    "MNTNS_NS": ("mnt_namespace", "ns"), "NS_INUM": ("ns_common", "inum"),
    "TASK_REAL_CRED": ("task_struct", "real_cred"), "CRED_CAP_PERMITTED": ("cred", "cap_permitted"),
    "CRED_CAP_BSET": ("cred", "cap_bset"),
    "FILE_INODE": ("file", "f_inode"), "INODE_MODE": ("inode", "i_mode"), "INODE_INO": ("inode", "i_ino"),
    "FILE_PRIVATE": ("file", "private_data"), "SOCKET_SK": ("socket", "sk"),
    "SOCK_COMMON": ("sock", "__sk_common"), "SKC_FAMILY": ("sock_common", "skc_family"),
    "TASK_MM": ("task_struct", "mm"), "MM_ARG_START": ("mm_struct", "arg_start"),
    "MM_ARG_END": ("mm_struct", "arg_end"),
    "TASK_GROUP_LEADER": ("task_struct", "group_leader"), "TASK_START_TIME": ("task_struct", "start_time"),
}


def kernel_offset_flags(plan: SourcePlan) -> list[str]:
    """-DOFF_* from the kernel's BTF and -DHAVE_KOFF=1; without BTF, -DHAVE_KOFF=0 and an error in
    `plan.errors` (paths then stay as the process wrote them, ia32 syscalls are not seen)."""
    from .btf import BTFError, vmlinux
    try:
        btf = vmlinux()
        flags = [f"-DOFF_{name}={btf.member_offset(s, m)}" for name, (s, m) in KERNEL_OFFSETS.items()]
    except BTFError as e:
        msg = (f"kernel BTF: {e}; event paths are not resolved to absolute paths and ia32 (int 0x80) "
               "syscalls are not traced")
        if msg not in plan.errors:
            plan.errors.append(msg)
        return ["-DHAVE_KOFF=0"]
    return [*flags, "-DHAVE_KOFF=1"]


def cflags(plan: SourcePlan, ringbuf_pages: int, wakeup_every: int) -> list[str]:
    flags = [f"-DRINGBUF_PAGES={ringbuf_pages}", f"-DWAKEUP_EVERY={wakeup_every}", "-Wno-macro-redefined"]
    flags += [f"-DHAVE_TP_{tp.replace(':', '__')}=1" for tp in sorted(plan.present)]
    from .btf import tty_cflags
    flags += kernel_offset_flags(plan)
    return flags + tty_cflags()


def compile_and_attach(plan: SourcePlan, ringbuf_pages: int, wakeup_every: int, bpf_dir: Path = BPF_DIR,
                       extra_cflags: tuple[str, ...] = ()):
    """Blocking (seconds): compile, load and attach; returns the bcc BPF object.
    `extra_cflags` override compile-time sizes, e.g. ("-DFLOWS_MAX=4",) in tests."""
    try:
        from bcc import BPF
    except ImportError as e:
        raise ProbeLoadError(f"bcc is not importable ({e}): install python3-bpfcc and link it into the "
                             "venv (make bootstrap)") from None
    if not plan.files:
        raise ProbeLoadError("no BPF source can be loaded: " + "; ".join(plan.errors))
    try:
        bpf = BPF(text=program_text(plan, bpf_dir).encode(),
                  cflags=[*cflags(plan, ringbuf_pages, wakeup_every), *extra_cflags])
    except Exception as e:
        raise ProbeLoadError(f"BPF compile/load of {[p.name for p in plan.files]} failed: {e}") from e
    from .btf import vmlinux
    from .memory import release_compiler_memory
    vmlinux.cache_clear()  # the offsets are compiled in: the parsed BTF (~10 MB) is not needed again
    release_compiler_memory()  # the compiler is done: ~90 MB of RSS back
    return bpf
