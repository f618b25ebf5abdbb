// Privilege and isolation changes: ptrace, set*uid, set*gid, capset,
// unshare, setns, and signals sent to other processes.
// a[]: ptrace {ret, request, target}; setuid/setgid {ret, id, eid, sid, syscall
// (0 set*id, 1 setre*id, 2 setres*id), caller's uid|gid<<32 before the call}; unshare {ret, flags}; setns {ret, fd,
// nstype}; signal {ret, target, sig, tid (tgkill)}.
// needs: file.bpf.c

#define ID_UNCHANGED 0xffffffffLL
// set*id a[5]: the caller's uid | gid << 32 at sys_enter. The event head is
// filled at sys_exit, i.e. with the ids after the call.
#define CALLER_IDS ((s64)bpf_get_current_uid_gid())

// Exit side of a call deduplicated by its outcome too (ptrace, process_vm_*): a repeat is
// the same call (a[4], the key stashed at entry) with the same `flags` and the same success or
// failure, so a failed first call never hides the successful ones after it.
#define DEDUP_FAILED 0x80000000U
static __always_inline int stash_emit_once(long ret, u32 flags)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    if (s.a[4] && dedup_hit(s.kind, flags | (ret < 0 ? DEDUP_FAILED : 0), 0, s.a[4]))
        return 0;
    return emit_num(s.kind, &s, ret);
}

// ptrace: a[] {ret, request, target pid, -, dedup key}. Repeats of a request on one target
// (a sampling profiler seizes and interrupts every thread at every sample) are counted in the
// kernel like file repeats.
TRACEPOINT_PROBE(syscalls, sys_enter_ptrace)
{
    u64 hash = ((u64)(u32)args->pid << 32 | (u32)args->request) + 1;
    stash_put(K_PTRACE, SHAPE_NUM, args->request, args->pid, 0, hash, 0, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ptrace)
{
    u64 id = bpf_get_current_pid_tgid();
    struct stash *s = stash.lookup(&id);
    return stash_emit_once(args->ret, s ? (u32)s->a[1] : 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_setuid)
{
    stash_put(K_SETUID, SHAPE_NUM, (u32)args->uid, ID_UNCHANGED, ID_UNCHANGED, 0, CALLER_IDS, 0, 0, 0);
    return 0;
}

SYS_EXIT(setuid, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_setreuid)
{
    stash_put(K_SETUID, SHAPE_NUM, (u32)args->ruid, (u32)args->euid, ID_UNCHANGED, 1, CALLER_IDS, 0, 0, 0);
    return 0;
}

SYS_EXIT(setreuid, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_setresuid)
{
    stash_put(K_SETUID, SHAPE_NUM, (u32)args->ruid, (u32)args->euid, (u32)args->suid, 2, CALLER_IDS, 0, 0, 0);
    return 0;
}

SYS_EXIT(setresuid, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_setgid)
{
    stash_put(K_SETGID, SHAPE_NUM, (u32)args->gid, ID_UNCHANGED, ID_UNCHANGED, 0, CALLER_IDS, 0, 0, 0);
    return 0;
}

SYS_EXIT(setgid, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_setregid)
{
    stash_put(K_SETGID, SHAPE_NUM, (u32)args->rgid, (u32)args->egid, ID_UNCHANGED, 1, CALLER_IDS, 0, 0, 0);
    return 0;
}

SYS_EXIT(setregid, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_setresgid)
{
    stash_put(K_SETGID, SHAPE_NUM, (u32)args->rgid, (u32)args->egid, (u32)args->sgid, 2, CALLER_IDS, 0, 0, 0);
    return 0;
}

SYS_EXIT(setresgid, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_capset)
{
    stash_put(K_CAPSET, SHAPE_NUM, 0, 0, 0, 0, 0, 0, 0, 0);
    return 0;
}

SYS_EXIT(capset, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
    stash_put(K_UNSHARE, SHAPE_NUM, args->unshare_flags, 0, 0, 0, 0, 0, 0, 0);
    return 0;
}

SYS_EXIT(unshare, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
    stash_put(K_SETNS, SHAPE_NUM, args->fd, args->flags, 0, 0, 0, 0, 0, 0);
    return 0;
}

SYS_EXIT(setns, stash_emit)

// Signals: only real ones (sig != 0) sent to another process.
TRACEPOINT_PROBE(syscalls, sys_enter_kill)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (args->sig != 0 && args->pid != tgid)
        stash_put(K_SIGNAL, SHAPE_NUM, args->pid, args->sig, 0, 0, 0, 0, 0, 0);
    return 0;
}

SYS_EXIT(kill, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_tgkill)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (args->sig != 0 && args->tgid != tgid)
        stash_put(K_SIGNAL, SHAPE_NUM, args->tgid, args->sig, args->pid, 0, 0, 0, 0, 0);
    return 0;
}

SYS_EXIT(tgkill, stash_emit)

// process_vm_readv/writev into another process (issue 9): a[] {ret, target pid,
// 1 write / 0 read, remote iovec count, dedup key}. Calls on the caller itself are not sent;
// repeats (same caller, target, direction and outcome: a profiler or debugger reads thousands
// of times a second) are counted in the kernel like file repeats (stash_emit_once).
static __always_inline void procvm_enter(u32 pid, s64 write, s64 riovcnt)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (pid != tgid)
        stash_put(K_PROCVM, SHAPE_NUM, pid, write, riovcnt, (u64)pid + 1, 0, 0, 0, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_process_vm_readv)
{
    procvm_enter(args->pid, 0, args->riovcnt);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_process_vm_readv)
{
    return stash_emit_once(args->ret, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_process_vm_writev)
{
    procvm_enter(args->pid, 1, args->riovcnt);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_process_vm_writev)
{
    return stash_emit_once(args->ret, 1);
}
