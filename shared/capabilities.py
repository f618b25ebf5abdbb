"""Linux capability names by bit (include/uapi/linux/capability.h), for the
capability masks the probe reads from a task's credentials."""
from __future__ import annotations

from functools import lru_cache

NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


@lru_cache(maxsize=256)
def cap_names(mask: int) -> str:
    """'CAP_CHOWN CAP_KILL ...' for a capability mask (Falco's thread.cap_* form);
    bits without a name as CAP_<n>."""
    return " ".join(NAMES[i] if i < len(NAMES) else f"CAP_{i}" for i in range(mask.bit_length()) if mask >> i & 1)


@lru_cache(maxsize=256)
def cap_list(mask: int) -> tuple[str, ...]:
    """The names of a capability mask, one by one."""
    return tuple(cap_names(mask).split())
