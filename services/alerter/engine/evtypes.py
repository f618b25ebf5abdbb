"""evt.type values: our event kinds, plus Falco's syscall names as aliases."""
from __future__ import annotations

from shared.schema import KINDS

# Kinds the design names that the schema table may not list yet.
KNOWN_KINDS = frozenset(KINDS) | {"exec", "exit", "fork", "open", "write", "close", "dns", "listen",
                                  "capset", "signal"}

ALIASES: dict[str, str] = {
    "open": "open", "openat": "open", "openat2": "open", "creat": "open",
    "execve": "exec", "execveat": "exec",
    "accept": "accept", "accept4": "accept",
    "setuid": "setuid", "setreuid": "setuid", "setresuid": "setuid",
    "setgid": "setgid", "setregid": "setgid", "setresgid": "setgid",
    "init_module": "module", "finit_module": "module",
    "memfd_create": "memfd",
    "unlink": "unlink", "unlinkat": "unlink",
    "rename": "rename", "renameat": "rename", "renameat2": "rename",
    "symlink": "symlink", "symlinkat": "symlink",
    "link": "link", "linkat": "link",
    "chmod": "chmod", "fchmod": "chmod", "fchmodat": "chmod", "fchmodat2": "chmod",
    "dup": "dup", "dup2": "dup", "dup3": "dup",
    "clone": "fork", "clone3": "fork", "vfork": "fork",
    "procexit": "exit", "exit_group": "exit",
    "kill": "signal", "tkill": "signal", "tgkill": "signal",
    "umount": "umount", "umount2": "umount",
    "chown": "chown", "fchown": "chown", "fchownat": "chown", "lchown": "chown",
    "truncate": "truncate", "ftruncate": "truncate",
    "mkdir": "mkdir", "mkdirat": "mkdir",
    "mmap": "mprotect", "mmap2": "mprotect", "pkey_mprotect": "mprotect",
    "process_vm_readv": "procvm", "process_vm_writev": "procvm",
    "pwrite": "write", "pwrite64": "write", "writev": "write",
}


def kind_of(name: str) -> str | None:
    """The event kind `name` denotes, or None when it names none we know."""
    if name in KNOWN_KINDS:
        return name
    return ALIASES.get(name)
