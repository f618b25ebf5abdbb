// The ia32 ABI (int $0x80, or a 32-bit process): syscalls:sys_enter_* / sys_exit_*
// never fire for it, raw_syscalls do, with the i386 syscall number. A syscall
// is ia32 when TS_COMPAT is set in the task's thread_info status (offsets from
// BTF, see services/probe/loader.py). Arguments come from pt_regs: bx, cx, dx,
// si, di, bp. Each call of interest is stashed and emitted exactly like its
// 64-bit twin (same kinds, same layouts), so rules see no difference.
// Covered: open, openat, creat, openat2, execve, execveat, connect, socketcall
// (connect), ptrace, set*uid/set*gid (16- and 32-bit ids), mount, init_module,
// finit_module, bpf, unshare, setns, chmod, fchmodat, unlink, unlinkat,
// memfd_create, chdir, fchdir, kill, tgkill.
#if HAVE_KOFF
#define TS_COMPAT_ 0x0002

#define I32_UNLINK 10
#define I32_CHDIR 12
#define I32_CHMOD 15
#define I32_OPEN 5
#define I32_EXECVE 11
#define I32_MOUNT 21
#define I32_SETUID16 23
#define I32_PTRACE 26
#define I32_KILL 37
#define I32_SETGID16 46
#define I32_SETREUID16 70
#define I32_SETREGID16 71
#define I32_CREAT 8
#define I32_SOCKETCALL 102
#define I32_INIT_MODULE 128
#define I32_FCHDIR 133
#define I32_SETRESUID16 164
#define I32_SETRESGID16 170
#define I32_SETREUID 203
#define I32_SETREGID 204
#define I32_SETRESUID 208
#define I32_SETRESGID 210
#define I32_SETUID 213
#define I32_SETGID 214
#define I32_TGKILL 270
#define I32_OPENAT 295
#define I32_UNLINKAT 301
#define I32_FCHMODAT 306
#define I32_UNSHARE 310
#define I32_SETNS 346
#define I32_FINIT_MODULE 350
#define I32_MEMFD_CREATE 356
#define I32_BPF 357
#define I32_EXECVEAT 358
#define I32_CONNECT 362
#define I32_OPENAT2 437
#define SYS_CONNECT_ 3  // socketcall's call number for connect

static __always_inline int i32_wanted(long nr)
{
    switch (nr) {
    case I32_UNLINK: case I32_CHDIR: case I32_CHMOD: case I32_OPEN: case I32_EXECVE: case I32_MOUNT:
    case I32_SETUID16: case I32_PTRACE: case I32_KILL: case I32_SETGID16: case I32_SETREUID16:
    case I32_SETREGID16: case I32_CREAT: case I32_SOCKETCALL: case I32_INIT_MODULE: case I32_FCHDIR:
    case I32_SETRESUID16: case I32_SETRESGID16: case I32_SETREUID: case I32_SETREGID: case I32_SETRESUID:
    case I32_SETRESGID: case I32_SETUID: case I32_SETGID: case I32_TGKILL: case I32_OPENAT:
    case I32_UNLINKAT: case I32_FCHMODAT: case I32_UNSHARE: case I32_SETNS: case I32_FINIT_MODULE:
    case I32_MEMFD_CREATE: case I32_BPF: case I32_EXECVEAT: case I32_CONNECT: case I32_OPENAT2:
        return 1;
    }
    return 0;
}

static __always_inline int task_in_ia32(void)
{
    u32 status = 0;
    bpf_probe_read_kernel(&status, sizeof(status), (char *)bpf_get_current_task() + OFF_TASK_TI + OFF_TI_STATUS);
    return status & TS_COMPAT_;
}

// A 16-bit id of the old set*id16 calls: 0xffff means "unchanged".
static __always_inline s64 id16(u64 v)
{
    v &= 0xffff;
    return v == 0xffff ? ID_UNCHANGED : (s64)v;
}

static __always_inline s64 id32(u64 v)
{
    return (u32)v;
}

#define P(x) ((const void *)(u64)(u32)(x))

RAW_TRACEPOINT_PROBE(sys_enter)
{
    long nr = ctx->args[1];
    if (!i32_wanted(nr) || !task_in_ia32())
        return 0;
    struct pt_regs r = {};
    bpf_probe_read_kernel(&r, sizeof(r), (void *)ctx->args[0]);
    u64 a0 = (u32)r.bx, a1 = (u32)r.cx, a2 = (u32)r.dx, a3 = (u32)r.si;
    switch (nr) {
    case I32_OPEN:
        path_stash(K_OPEN, open_class(a1), P(a0), a1, a2, AT_FDCWD_, a1, AT_FDCWD_);
        break;
    case I32_CREAT:
        path_stash(K_OPEN, CLS_WRITE | CLS_CREATE, P(a0), 01101, a1, AT_FDCWD_, 01101, AT_FDCWD_);
        break;
    case I32_OPENAT:
        path_stash(K_OPEN, open_class(a2), P(a1), a2, a3, (s32)a0, a2, (s32)a0);
        break;
    case I32_OPENAT2: {
        struct { u64 flags; u64 mode; } how = {};
        bpf_probe_read_user(&how, sizeof(how), P(a2));
        path_stash(K_OPEN, open_class(how.flags), P(a1), how.flags, how.mode, (s32)a0, how.flags, (s32)a0);
        break;
    }
    case I32_UNLINK:
        path_stash(K_UNLINK, CLS_READ, P(a0), AT_FDCWD_, 0, 0, 0, AT_FDCWD_);
        break;
    case I32_UNLINKAT:
        path_stash(K_UNLINK, CLS_READ, P(a1), (s32)a0, a2, 0, a2, (s32)a0);
        break;
    case I32_CHMOD:
        path_stash(K_CHMOD, CLS_READ, P(a0), a1, AT_FDCWD_, 0, a1, AT_FDCWD_);
        break;
    case I32_FCHMODAT:
        path_stash(K_CHMOD, CLS_READ, P(a1), a2, (s32)a0, 0, a2, (s32)a0);
        break;
    case I32_EXECVE:
        exec_enter_abi(P(a0), P(a1), AT_FDCWD_, 1);
        break;
    case I32_EXECVEAT:
        exec_enter_abi(P(a1), P(a2), (s32)a0, 1);
        break;
    case I32_CONNECT:
        net_stash(K_CONNECT, (s32)a0, a2, 0, P(a1), 0);
        break;
    case I32_SOCKETCALL:
        if (a0 == SYS_CONNECT_) {
            u32 sa[3] = {};  // fd, sockaddr pointer, addrlen
            bpf_probe_read_user(sa, sizeof(sa), P(a1));
            net_stash(K_CONNECT, (s32)sa[0], sa[2], 0, P(sa[1]), 0);
        }
        break;
    case I32_PTRACE:
        stash_put(K_PTRACE, SHAPE_NUM, a0, (s32)a1, 0, 0, 0, 0, 0, 0);
        break;
    case I32_SETUID16:
        stash_put(K_SETUID, SHAPE_NUM, id16(a0), ID_UNCHANGED, ID_UNCHANGED, 0, 0, 0, 0, 0);
        break;
    case I32_SETUID:
        stash_put(K_SETUID, SHAPE_NUM, id32(a0), ID_UNCHANGED, ID_UNCHANGED, 0, 0, 0, 0, 0);
        break;
    case I32_SETREUID16:
        stash_put(K_SETUID, SHAPE_NUM, id16(a0), id16(a1), ID_UNCHANGED, 1, 0, 0, 0, 0);
        break;
    case I32_SETREUID:
        stash_put(K_SETUID, SHAPE_NUM, id32(a0), id32(a1), ID_UNCHANGED, 1, 0, 0, 0, 0);
        break;
    case I32_SETRESUID16:
        stash_put(K_SETUID, SHAPE_NUM, id16(a0), id16(a1), id16(a2), 2, 0, 0, 0, 0);
        break;
    case I32_SETRESUID:
        stash_put(K_SETUID, SHAPE_NUM, id32(a0), id32(a1), id32(a2), 2, 0, 0, 0, 0);
        break;
    case I32_SETGID16:
        stash_put(K_SETGID, SHAPE_NUM, id16(a0), ID_UNCHANGED, ID_UNCHANGED, 0, 0, 0, 0, 0);
        break;
    case I32_SETGID:
        stash_put(K_SETGID, SHAPE_NUM, id32(a0), ID_UNCHANGED, ID_UNCHANGED, 0, 0, 0, 0, 0);
        break;
    case I32_SETREGID16:
        stash_put(K_SETGID, SHAPE_NUM, id16(a0), id16(a1), ID_UNCHANGED, 1, 0, 0, 0, 0);
        break;
    case I32_SETREGID:
        stash_put(K_SETGID, SHAPE_NUM, id32(a0), id32(a1), ID_UNCHANGED, 1, 0, 0, 0, 0);
        break;
    case I32_SETRESGID16:
        stash_put(K_SETGID, SHAPE_NUM, id16(a0), id16(a1), id16(a2), 2, 0, 0, 0, 0);
        break;
    case I32_SETRESGID:
        stash_put(K_SETGID, SHAPE_NUM, id32(a0), id32(a1), id32(a2), 2, 0, 0, 0, 0);
        break;
    case I32_MOUNT:
        stash_put(K_MOUNT, SHAPE_STR3, a3, 0, 0, 0, 0, P(a0), P(a1), P(a2));
        break;
    case I32_INIT_MODULE:
        stash_put(K_MODULE, SHAPE_STR1, -1, 0, 0, 0, 0, P(a2), 0, 0);
        break;
    case I32_FINIT_MODULE:
        stash_put(K_MODULE, SHAPE_STR1, (s32)a0, a2, 1, 0, 0, P(a1), 0, 0);
        break;
    case I32_BPF:
        stash_put(K_BPF, SHAPE_NUM, a0, -1, 0, 0, 0, P(a1), 0, 0);
        break;
    case I32_UNSHARE:
        stash_put(K_UNSHARE, SHAPE_NUM, a0, 0, 0, 0, 0, 0, 0, 0);
        break;
    case I32_SETNS:
        stash_put(K_SETNS, SHAPE_NUM, (s32)a0, a1, 0, 0, 0, 0, 0, 0);
        break;
    case I32_MEMFD_CREATE:
        stash_put(K_MEMFD, SHAPE_STR1, a1, 0, 0, 0, 0, P(a0), 0, 0);
        break;
    case I32_CHDIR:
        stash_put(K_CHDIR, SHAPE_STR1, 0, 0, 0, 0, 0, P(a0), 0, 0);
        break;
    case I32_FCHDIR:
        stash_put(K_CHDIR, SHAPE_NUM, (s32)a0, 1, 0, 0, 0, 0, 0, 0);
        break;
    case I32_KILL:
        if (a1 != 0 && (u32)a0 != bpf_get_current_pid_tgid() >> 32)
            stash_put(K_SIGNAL, SHAPE_NUM, (s32)a0, a1, 0, 0, 0, 0, 0, 0);
        break;
    case I32_TGKILL:
        if (a2 != 0 && (u32)a0 != bpf_get_current_pid_tgid() >> 32)
            stash_put(K_SIGNAL, SHAPE_NUM, (s32)a0, a2, (s32)a1, 0, 0, 0, 0, 0);
        break;
    }
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    long nr = -1;
    bpf_probe_read_kernel(&nr, sizeof(nr), &((struct pt_regs *)ctx->args[0])->orig_ax);
    if (!i32_wanted(nr) || !task_in_ia32())
        return 0;
    long ret = ctx->args[1];
    switch (nr) {
    case I32_OPEN: case I32_CREAT: case I32_OPENAT: case I32_OPENAT2: case I32_UNLINK: case I32_UNLINKAT:
    case I32_CHMOD: case I32_FCHMODAT:
        return path_exit(ret);
    case I32_EXECVE: case I32_EXECVEAT:
        if (ret < 0)
            exec_emit((u32)bpf_get_current_pid_tgid(), ret);
        return 0;
    case I32_CONNECT: case I32_SOCKETCALL:
        return connect_exit(ret);
    case I32_CHDIR: case I32_FCHDIR:
        chdir_exit(ret);
        return 0;
    case I32_BPF: {
        struct stash s;
        if (!stash_take(&s))
            return 0;
        struct ev_num *e = ev_reserve(K_BPF, sizeof(*e));
        if (!e)
            return 0;
        __builtin_memcpy(e->a, s.a, sizeof(e->a));
        e->a[0] = ret;
        if (s.a[1] == BPF_PROG_LOAD_) {
            u32 prog_type = 0;
            if (bpf_probe_read_user(&prog_type, sizeof(prog_type), (void *)s.p[0]) == 0)
                e->a[2] = prog_type;
        }
        ev_submit(e);
        return 0;
    }
    }
    return stash_emit(ret);
}
#endif
