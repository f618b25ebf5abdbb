// Kernel-facing syscalls: mount, bpf, kernel modules, memfd_create.
// a[]: mount {ret, flags}; bpf {ret, cmd, prog_type (BPF_PROG_LOAD) or -1};
// module {ret, fd (finit_module) or -1, flags, syscall (0 init, 1 finit)};
// memfd {ret, flags}; mprotect (W+X only) {ret, start, len, prot | syscall << 32,
// mmap flags, mmap fd}; userfaultfd {ret, flags}.
// needs: file.bpf.c

#define BPF_PROG_LOAD_ 5

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
    stash_put(K_MOUNT, SHAPE_STR3, args->flags, 0, 0, 0, 0, args->dev_name, args->dir_name, args->type);
    return 0;
}

SYS_EXIT(mount, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_bpf)
{
    stash_put(K_BPF, SHAPE_NUM, args->cmd, -1, 0, 0, 0, args->uattr, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_bpf)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    struct ev_num *e = ev_reserve(K_BPF, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = args->ret;
    if (s.a[1] == BPF_PROG_LOAD_) {
        u32 prog_type = 0;  // union bpf_attr: prog_type is the first field for BPF_PROG_LOAD
        if (bpf_probe_read_user(&prog_type, sizeof(prog_type), (void *)s.p[0]) == 0)
            e->a[2] = prog_type;
    }
    ev_submit(e);
    return 0;
}

#if HAVE_TP(syscalls, sys_enter_init_module) && HAVE_TP(syscalls, sys_exit_init_module)
TRACEPOINT_PROBE(syscalls, sys_enter_init_module)
{
    stash_put(K_MODULE, SHAPE_STR1, -1, 0, 0, 0, 0, args->uargs, 0, 0);
    return 0;
}

SYS_EXIT(init_module, stash_emit)
#endif

#if HAVE_TP(syscalls, sys_enter_finit_module) && HAVE_TP(syscalls, sys_exit_finit_module)
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module)
{
    stash_put(K_MODULE, SHAPE_STR1, args->fd, args->flags, 1, 0, 0, args->uargs, 0, 0);
    return 0;
}

SYS_EXIT(finit_module, stash_emit)
#endif

// Fallback for kernels without the *_module syscall tracepoints (built without
// CONFIG_MODULES: the syscalls still exist and fail with -ENOSYS, and an attempt
// to load a module is still worth an alert). syscalls.bpf.c calls this from
// raw_syscalls:sys_enter; the event goes out at once with ret -ENOSYS.
#define NR_INIT_MODULE_ 175
#define NR_FINIT_MODULE_ 313
#define ENOSYS_ 38
static __always_inline void module_fallback(long nr, u64 a0, u64 a1, u64 a2)
{
#if !(HAVE_TP(syscalls, sys_enter_init_module) && HAVE_TP(syscalls, sys_exit_init_module))
    if (nr == NR_INIT_MODULE_) {
        stash_put(K_MODULE, SHAPE_STR1, -1, 0, 0, 0, 0, (const void *)a2, 0, 0);
        stash_emit(-ENOSYS_);
    }
#endif
#if !(HAVE_TP(syscalls, sys_enter_finit_module) && HAVE_TP(syscalls, sys_exit_finit_module))
    if (nr == NR_FINIT_MODULE_) {
        stash_put(K_MODULE, SHAPE_STR1, (s64)a0, (s64)a2, 1, 0, 0, (const void *)a1, 0, 0);
        stash_emit(-ENOSYS_);
    }
#endif
}
#define HAVE_MODULE_FALLBACK 1

TRACEPOINT_PROBE(syscalls, sys_enter_memfd_create)
{
    stash_put(K_MEMFD, SHAPE_STR1, args->flags, 0, 0, 0, 0, args->uname, 0, 0);
    return 0;
}

SYS_EXIT(memfd_create, stash_emit)

// umount2(target, flags) (issue 9): a[] {ret, flags}; s1 the target as passed.
TRACEPOINT_PROBE(syscalls, sys_enter_umount)
{
    stash_put(K_UMOUNT, SHAPE_STR1, args->flags, 0, 0, 0, 0, args->name, 0, 0);
    return 0;
}

SYS_EXIT(umount, stash_emit)

// Memory made writable and executable at once (issue 9): shellcode loaders and
// in-memory payloads; JIT runtimes do it too. Only W+X requests are stashed, so
// the programs cost a test of one argument on the node's many mmap/mprotect calls.
#define PROT_WX_ 6  // PROT_WRITE | PROT_EXEC
#define WX_MPROTECT 0
#define WX_MMAP 1
#define WX_PKEY_MPROTECT 2
static __always_inline void wx_stash(u32 syscall, u64 start, u64 len, u64 prot, s64 flags, s64 fd)
{
    if ((prot & PROT_WX_) == PROT_WX_)
        stash_put(K_MPROTECT, SHAPE_NUM, start, len, (prot & 0xffffffff) | ((u64)syscall << 32), flags, fd,
                  0, 0, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_mprotect)
{
    wx_stash(WX_MPROTECT, args->start, args->len, args->prot, 0, -1);
    return 0;
}

SYS_EXIT(mprotect, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_mmap)
{
    wx_stash(WX_MMAP, args->addr, args->len, args->prot, args->flags, (s32)args->fd);
    return 0;
}

SYS_EXIT(mmap, stash_emit)

#if HAVE_TP(syscalls, sys_enter_pkey_mprotect) && HAVE_TP(syscalls, sys_exit_pkey_mprotect)
TRACEPOINT_PROBE(syscalls, sys_enter_pkey_mprotect)
{
    wx_stash(WX_PKEY_MPROTECT, args->start, args->len, args->prot, 0, -1);
    return 0;
}

SYS_EXIT(pkey_mprotect, stash_emit)
#endif

// userfaultfd: page faults handled by a user-space process (a kernel-exploit primitive).
#if HAVE_TP(syscalls, sys_enter_userfaultfd) && HAVE_TP(syscalls, sys_exit_userfaultfd)
TRACEPOINT_PROBE(syscalls, sys_enter_userfaultfd)
{
    stash_put(K_USERFAULTFD, SHAPE_NUM, args->flags, 0, 0, 0, 0, 0, 0, 0);
    return 0;
}

SYS_EXIT(userfaultfd, stash_emit)
#endif

// io_uring: a process can open, connect, accept, rename... through a ring without making the
// syscalls the other programs trace. The ring's creation (io_uring_setup, any ABI) and the
// first request of each file or network operation per process are events; what the requests
// name is not read. iouring (struct ev_str1): a[1] = opcode (-1: ring created), a[2] = ring fd,
// a[3] = sq entries, a[4] = setup flags, a[5] = 1 if the SQPOLL thread submitted; s1 = the
// kernel's name of the operation ("SETUP" for the ring).
#if HAVE_TP(io_uring, io_uring_create)
TRACEPOINT_PROBE(io_uring, io_uring_create)
{
    if (skip(K_IOURING))
        return 0;
    struct ev_str1 *e = ev_reserve(K_IOURING, sizeof(*e));
    if (!e)
        return 0;
    e->a[0] = 0;
    e->a[1] = -1;
    e->a[2] = args->fd;
    e->a[3] = args->sq_entries;
    e->a[4] = args->flags;
    e->a[5] = 0;
    __builtin_memcpy(e->s1, "SETUP", 6);
    ev_submit(e);
    return 0;
}
#endif

#if HAVE_TP(io_uring, io_uring_submit_req) || HAVE_TP(io_uring, io_uring_submit_sqe)
// (process, operation) already reported; the process is its pid and start time, so a reused
// pid is another process
struct iou_key { u64 born; u32 tgid; u32 opcode; };
BPF_TABLE("lru_hash", struct iou_key, u8, iou_seen, 4096);

static __always_inline u64 process_born(void)
{
    u64 t = 0;
#if HAVE_KOFF
    char *leader = kptr((char *)bpf_get_current_task() + OFF_TASK_GROUP_LEADER);
    if (leader)
        bpf_probe_read_kernel(&t, sizeof(t), leader + OFF_TASK_START_TIME);
#endif
    return t;
}

// uapi enum io_uring_op: ACCEPT 13, CONNECT 16, OPENAT 18, OPENAT2 28, RENAMEAT 35, UNLINKAT 36,
// MKDIRAT 37, SYMLINKAT 38, LINKAT 39, FSETXATTR 41, SETXATTR 42, SOCKET 45, FIXED_FD_INSTALL 54,
// FTRUNCATE 55, BIND 56, LISTEN 57
static __always_inline int iou_watched(u32 op)
{
    switch (op) {
    case 13: case 16: case 18: case 28: case 35: case 36: case 37: case 38: case 39: case 41: case 42:
    case 45: case 54: case 55: case 56: case 57:
        return 1;
    }
    return 0;
}

// The first request of a watched operation by this process: an event (s1 left to the caller:
// the kernel's name of the operation where the tracepoint has it). NULL when not reported.
static __always_inline struct ev_str1 *iou_request(u32 op, u64 flags, u8 sq_thread, struct iou_key *k)
{
    if (!iou_watched(op) || skip(K_IOURING))
        return 0;
    k->born = process_born();
    k->tgid = bpf_get_current_pid_tgid() >> 32;
    k->opcode = op;
    if (iou_seen.lookup(k))
        return 0;
    struct ev_str1 *e = ev_reserve(K_IOURING, sizeof(*e));
    if (!e)
        return 0;   // not marked as seen: the next request of it is reported
    e->a[0] = 0;
    e->a[1] = op;
    e->a[2] = -1;
    e->a[3] = 0;
    e->a[4] = flags;
    e->a[5] = sq_thread;
    e->s1[0] = 0;
    return e;
}

static __always_inline void iou_reported(struct ev_str1 *e, struct iou_key *k)
{
    u8 one = 1;
    iou_seen.update(k, &one);
    ev_submit(e);
}
#endif

#if HAVE_TP(io_uring, io_uring_submit_req)
TRACEPOINT_PROBE(io_uring, io_uring_submit_req)
{
    struct iou_key k = {};
    struct ev_str1 *e = iou_request(args->opcode, args->flags, args->sq_thread, &k);
    if (!e)
        return 0;
    TP_DATA_LOC_READ_STR(e->s1, op_str, 32);
    iou_reported(e, &k);
    return 0;
}
#elif HAVE_TP(io_uring, io_uring_submit_sqe)
// kernels before 6.3: the same request, no operation name (user space names the number)
TRACEPOINT_PROBE(io_uring, io_uring_submit_sqe)
{
    struct iou_key k = {};
    struct ev_str1 *e = iou_request(args->opcode, args->flags, args->sq_thread, &k);
    if (e)
        iou_reported(e, &k);
    return 0;
}
#endif
