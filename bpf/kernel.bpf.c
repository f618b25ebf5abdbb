// Kernel-facing syscalls: mount, bpf, kernel modules, memfd_create.
// a[]: mount {ret, flags}; bpf {ret, cmd, prog_type (BPF_PROG_LOAD) or -1};
// module {ret, fd (finit_module) or -1, flags, syscall (0 init, 1 finit)};
// memfd {ret, flags}.

#define BPF_PROG_LOAD_ 5

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
    stash_put(K_MOUNT, SHAPE_STR3, args->flags, 0, 0, 0, 0, args->dev_name, args->dir_name, args->type);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mount)
{
    return stash_emit(args->ret);
}

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

TRACEPOINT_PROBE(syscalls, sys_exit_init_module)
{
    return stash_emit(args->ret);
}
#endif

#if HAVE_TP(syscalls, sys_enter_finit_module) && HAVE_TP(syscalls, sys_exit_finit_module)
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module)
{
    stash_put(K_MODULE, SHAPE_STR1, args->fd, args->flags, 1, 0, 0, args->uargs, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_finit_module)
{
    return stash_emit(args->ret);
}
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

TRACEPOINT_PROBE(syscalls, sys_exit_memfd_create)
{
    return stash_emit(args->ret);
}

// umount2(target, flags) (issue 9): a[] {ret, flags}; s1 the target as passed.
TRACEPOINT_PROBE(syscalls, sys_enter_umount)
{
    stash_put(K_UMOUNT, SHAPE_STR1, args->flags, 0, 0, 0, 0, args->name, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_umount)
{
    return stash_emit(args->ret);
}
