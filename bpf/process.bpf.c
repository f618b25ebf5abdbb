// Process life cycle: exec (with argv), fork (processes, not threads), exit,
// and the working directory (chdir, fchdir).
// needs: file.bpf.c

struct exec_stash {
    s64 dirfd;      // execveat's dirfd, else AT_FDCWD
    s64 argv_len;
    s64 argc;
    s64 truncated;
    char filename[STR_SZ];
    char argv[ARGV_SZ + ARG_MAX_LEN];
};
BPF_PERCPU_ARRAY(exec_scratch, struct exec_stash, 1);
BPF_HASH(exec_args, u32, struct exec_stash, 1024);   // tid -> args, until exec or its failure
BPF_HASH(clone_flags, u32, u64, 4096);               // tid -> flags of the clone in progress
BPF_HASH(exit_codes, u32, s64, 4096);                // tgid -> exit_group() status

// Controlling tty of the current task, as Falco's proc.tty and /proc/<pid>/stat's
// tty_nr: new_encode_dev(MKDEV(driver->major, driver->minor_start + index)); 0 when
// none, -1 when unknown. Kernel struct offsets come from the running kernel's BTF
// (services/probe/btf.py passes them as -DTTY_OFF_*); without them it is unknown.
static __always_inline s64 current_tty(void)
{
#ifdef TTY_OFF_SIGNAL
    char *task = (char *)bpf_get_current_task();
    char *sig = 0, *tty = 0, *drv = 0;
    int index = 0, major = 0, minor_start = 0;
    if (bpf_probe_read_kernel(&sig, sizeof(sig), task + TTY_OFF_SIGNAL) < 0 || !sig)
        return -1;
    if (bpf_probe_read_kernel(&tty, sizeof(tty), sig + TTY_OFF_TTY) < 0)
        return -1;
    if (!tty)
        return 0;
    if (bpf_probe_read_kernel(&index, sizeof(index), tty + TTY_OFF_INDEX) < 0 ||
        bpf_probe_read_kernel(&drv, sizeof(drv), tty + TTY_OFF_DRIVER) < 0 || !drv ||
        bpf_probe_read_kernel(&major, sizeof(major), drv + TTY_OFF_MAJOR) < 0 ||
        bpf_probe_read_kernel(&minor_start, sizeof(minor_start), drv + TTY_OFF_MINOR_START) < 0)
        return -1;
    u32 minor = (u32)minor_start + (u32)index;
    return (s64)((minor & 0xff) | ((u32)major << 8) | ((minor & ~0xffU) << 12));
#else
    return -1;
#endif
}

// A capability set of the current task (`off`: cred's cap_permitted for Falco's
// thread.cap_permitted, cap_bset for the bounding set), from task->real_cred (a 64-bit
// kernel_cap_t; two u32 words before 6.3, the same bytes); -1 when unknown (no BTF offsets).
static __always_inline s64 current_caps(u32 off)
{
#if HAVE_KOFF
    char *task = (char *)bpf_get_current_task();
    char *cred = 0;
    u64 caps = 0;
    if (bpf_probe_read_kernel(&cred, sizeof(cred), task + OFF_TASK_REAL_CRED) < 0 || !cred ||
        bpf_probe_read_kernel(&caps, sizeof(caps), cred + off) < 0)
        return -1;
    return (s64)(caps & 0x7fffffffffffffffULL);
#else
    return -1;
#endif
}

// Exec environment (K_EXECENV; struct ev_env in common.h). The plan loads the
// names rules read (proc.env[NAME]) into env_watch, keyed by the first 8 bytes of
// "NAME=" (names of 8+ characters: their first 8; user space checks the whole
// name). One event, sent at execve entry before the exec's own, only when a
// watched variable is there (or the scan was cut short: user space then reads
// /proc/<pid>/environ).
BPF_HASH(env_watch, u64, u8, 256);

static __always_inline u64 env_key(u64 head)
{
#pragma unroll
    for (int j = 0; j < 8; j++) {
        u8 c = (head >> (8 * j)) & 0xff;
        if (c == '=' || c == 0)
            return j == 7 ? head : head & ((1ULL << (8 * (j + 1))) - 1);
    }
    return head;
}

// The scan writes into a per-CPU scratch; the ring buffer is touched only on a match. Its
// counts live there too, not on the stack: the verifier then sees one state per step of the
// loop, not one per combination of counts (the program stays far from the 1M-instruction limit).
struct env_scratch { char vars[ENV_SLOTS][ENV_VAL_SZ]; const char *ptrs[ENV_SCAN_MAX]; u64 used; s64 truncated; };
BPF_PERCPU_ARRAY(env_scratch, struct env_scratch, 1);

// One variable of the environment: kept in the next slot when env_watch has its name.
static __always_inline void env_check(struct env_scratch *sc, const char *var)
{
    u64 head = 0;
    if (bpf_probe_read_user(&head, sizeof(head), var) < 0 &&
        bpf_probe_read_user_str(&head, sizeof(head), var) < 0) {
        sc->truncated = 1;  // not paged in (BPF cannot fault it in): user space reads /proc/<pid>/environ
        return;
    }
    u64 key = env_key(head);
    if (!env_watch.lookup(&key))
        return;
    u64 used = sc->used;
    if (used >= ENV_SLOTS) {
        sc->truncated = 1;
        return;
    }
    if (bpf_probe_read_user_str(sc->vars[used & (ENV_SLOTS - 1)], ENV_VAL_SZ, var) > 0)
        sc->used = used + 1;
}

// Pointer i of an environment array: 64-bit, or 32-bit for an ia32 execve (compat).
static __always_inline int env_ptr(const char **out, const void *envp, u32 i, int compat)
{
    if (!compat)
        return bpf_probe_read_user(out, sizeof(*out), (const char *const *)envp + i);
    u32 p32 = 0;
    int err = bpf_probe_read_user(&p32, sizeof(p32), (const u32 *)envp + i);
    *out = (const char *)(u64)p32;
    return err;
}

static __always_inline void exec_env_scan_abi(const void *envp, int compat)
{
    if (!envp || skip(K_EXECENV))
        return;
    u32 zero = 0;
    struct env_scratch *sc = env_scratch.lookup(&zero);
    if (!sc)
        return;
    u32 i = 0;
    sc->used = 0;
    sc->truncated = 0;
    // The pointers in one read (the array is followed by more of the caller's memory); if that
    // read fails (the array ends too near unmapped memory), or they are 32-bit, one at a time
    // up to the NULL.
    if (compat || bpf_probe_read_user(sc->ptrs, sizeof(sc->ptrs), envp) < 0) {
        for (i = 0; i < ENV_SCAN_MAX; i++) {
            if (env_ptr(&sc->ptrs[i], envp, i, compat) < 0) {
                sc->ptrs[i] = 0;
                sc->truncated = 1;  // unreadable: as for a variable, user space reads the environment
                break;
            }
            if (!sc->ptrs[i])
                break;
        }
    }
    for (i = 0; i < ENV_SCAN_MAX; i++) {
        const char *var = sc->ptrs[i];
        if (!var)
            break;
        env_check(sc, var);
    }
    if (i == ENV_SCAN_MAX) {
        const char *more = 0;
        if (env_ptr(&more, envp, ENV_SCAN_MAX, compat) == 0 && more)
            sc->truncated = 1;
    }
    s64 used = sc->used, truncated = sc->truncated;
    if (!used && !truncated)
        return;
    struct ev_env *e = ev_reserve(K_EXECENV, sizeof(*e));
    if (!e)
        return;
    e->a[0] = 0;
    e->a[1] = i;
    e->a[2] = truncated;
    e->a[3] = used;
    e->a[4] = 0;
    e->a[5] = 0;
    bpf_probe_read_kernel(e->vars, sizeof(e->vars), sc->vars);  // slots past `used`: decode ignores them
    ev_submit(e);
}

// compat: argv is an array of 32-bit pointers (an ia32 execve)
static __always_inline void exec_enter_abi(const char *filename, const char *const *argv, s64 dirfd, int compat)
{
    if (skip(K_EXEC))
        return;
    u32 zero = 0;
    struct exec_stash *s = exec_scratch.lookup(&zero);
    if (!s)
        return;
    s->argc = 0;
    s->truncated = 0;
    s->dirfd = dirfd;
    if (bpf_probe_read_user_str(s->filename, sizeof(s->filename), filename) < 0)
        s->filename[0] = 0;
    u32 off = 0;
#pragma unroll
    for (int i = 0; i < ARGC_MAX; i++) {
        const char *arg = 0;
        if (compat) {
            u32 a32 = 0;
            if (bpf_probe_read_user(&a32, sizeof(a32), (const u32 *)argv + i) < 0 || !a32)
                goto done;
            arg = (const char *)(u64)a32;
        } else if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) < 0 || !arg) {
            goto done;
        }
        if (off > ARGV_SZ - 1) {
            s->truncated = 1;
            goto done;
        }
        long n = bpf_probe_read_user_str(&s->argv[off & (ARGV_SZ - 1)], ARG_MAX_LEN, arg);
        if (n <= 0)
            goto done;
        off += n;
        s->argc++;
    }
    s->truncated = 1;  // more than ARGC_MAX arguments (or the last one unread)
done:
    s->argv_len = off > ARGV_SZ ? ARGV_SZ : off;
    u32 tid = bpf_get_current_pid_tgid();
    if (exec_args.update(&tid, s) < 0)
        count_lost(K_EXEC);
}

static __always_inline void exec_enter(const char *filename, const char *const *argv, s64 dirfd)
{
    exec_enter_abi(filename, argv, dirfd, 0);
}

// The new image's arguments as the kernel copied them onto its stack (mm->arg_start..arg_end):
// what really runs, and in memory. The caller's argv read at execve entry can be missing (a
// string in a not yet faulted page, e.g. a fork child's file-backed .rodata, cannot be read
// there) or changed by another thread after the read. argc -1: the decoder counts them.
static __always_inline int exec_image_args(struct ev_exec *e)
{
#if HAVE_KOFF
    char *task = (char *)bpf_get_current_task();
    char *mm = 0;
    u64 start = 0, end = 0;
    if (bpf_probe_read_kernel(&mm, sizeof(mm), task + OFF_TASK_MM) < 0 || !mm ||
        bpf_probe_read_kernel(&start, sizeof(start), mm + OFF_MM_ARG_START) < 0 ||
        bpf_probe_read_kernel(&end, sizeof(end), mm + OFF_MM_ARG_END) < 0 || end <= start)
        return -1;
    u64 n = end - start, cut = n > ARGV_SZ;
    if (n > ARGV_SZ)
        n = ARGV_SZ;
    if (bpf_probe_read_user(e->argv, n, (const void *)start) < 0)
        return -1;
    e->a[1] = n;
    e->a[2] = -1;
    e->a[3] = cut;
    return 0;
#else
    return -1;
#endif
}

static __always_inline struct ev_exec *exec_record(struct exec_stash *s, long ret)
{
    struct ev_exec *e = ev_reserve(K_EXEC, sizeof(*e));
    if (!e)
        return 0;
    e->a[0] = ret;
    e->a[1] = s->argv_len;
    e->a[2] = s->argc;
    e->a[3] = s->truncated;
    e->a[4] = current_tty();
#if HAVE_KOFF
    e->a[5] = current_caps(OFF_CRED_CAP_PERMITTED);
    e->cap_bset = current_caps(OFF_CRED_CAP_BSET);
#else
    e->a[5] = e->cap_bset = -1;
#endif
    bpf_probe_read_kernel(e->filename, sizeof(e->filename), s->filename);
    return e;
}

// The directory a relative filename is relative to (the cwd, or execveat's dirfd).
static __always_inline void exec_base(struct ev_exec *e, s64 dirfd)
{
    e->base[0] = 0;
    if (e->filename[0] != '/' && e->filename[0] != 0 && base_dir(dirfd, e->base) < 0)
        e->base[0] = 0;
}

// A failed exec (ret < 0): the arguments as read at entry.
static __always_inline void exec_emit(u32 key, long ret)
{
    struct exec_stash *s = exec_args.lookup(&key);
    if (!s)
        return;
    struct ev_exec *e = exec_record(s, ret);
    if (e) {
        exec_base(e, s->dirfd);
        bpf_probe_read_kernel(e->argv, sizeof(e->argv), s->argv);
        ev_submit(e);
    }
    exec_args.delete(&key);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    exec_env_scan_abi(args->envp, 0);
    exec_enter(args->filename, args->argv, AT_FDCWD_);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    exec_env_scan_abi(args->envp, 0);
    exec_enter(args->filename, args->argv, args->fd);
    return 0;
}

// Success: the new image runs; old_pid is the tid that called execve.
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 key = args->old_pid;
    struct exec_stash *s = exec_args.lookup(&key);
    if (!s)
        return 0;
    struct ev_exec *e = exec_record(s, 0);
    if (e) {
        if (!e->filename[0])  // unreadable at entry: the path the kernel opened
            TP_DATA_LOC_READ_STR(e->filename, filename, sizeof(e->filename));
        exec_base(e, s->dirfd);
        if (exec_image_args(e) < 0)
            bpf_probe_read_kernel(e->argv, sizeof(e->argv), s->argv);
        ev_submit(e);
    }
    exec_args.delete(&key);
    return 0;
}

// Failure (ret < 0): nothing was exec'd, report the attempt.
TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
    if (args->ret < 0)
        exec_emit((u32)bpf_get_current_pid_tgid(), args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
    if (args->ret < 0)
        exec_emit((u32)bpf_get_current_pid_tgid(), args->ret);
    return 0;
}

#if HAVE_TP(cgroup, cgroup_mkdir)
// Not subject to the plan (a few per container start; see struct ev_cgroup), only to exclusion.
TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (excluded.lookup(&tgid))
        return 0;
    struct ev_cgroup *e = ev_reserve(K_CGROUP, sizeof(*e));
    if (!e)
        return 0;
    e->ret = 0;
    e->new_cgroup_id = args->id;
    e->level = args->level;
    e->hierarchy = args->root;
    TP_DATA_LOC_READ_STR(e->path, path, sizeof(e->path));
    ev_submit(e);
    return 0;
}
#endif

// clone flags tell threads (CLONE_THREAD) from processes at sched_process_fork.
TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), args->uargs);  // clone_args.flags is the first field
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone)
{
    u32 tid = bpf_get_current_pid_tgid();
    clone_flags.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone3)
{
    u32 tid = bpf_get_current_pid_tgid();
    clone_flags.delete(&tid);
    return 0;
}

// Runs in the caller. Records the parent of every new process (for ppid): the
// caller, or with CLONE_PARENT (runc's nsexec) the caller's own parent.
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, tgid = id >> 32;
    u64 *fl = clone_flags.lookup(&tid);
    if (fl && (*fl & CLONE_THREAD))
        return 0;
    u32 child = args->child_pid, parent = tgid;
    if (fl && (*fl & CLONE_PARENT)) {
        u32 *pp = parents.lookup(&tgid);
        parent = pp ? *pp : 0;  // 0: unknown
    }
    parents.update(&child, &parent);
    if (skip(K_FORK))
        return 0;
    struct ev_num *e = ev_reserve(K_FORK, sizeof(*e));
    if (!e)
        return 0;
    e->a[0] = 0;
    e->a[1] = child;
    e->a[2] = fl ? *fl : 0;
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s64 code = args->error_code;
    exit_codes.update(&tgid, &code);
    return 0;
}

// One event per process (the last thread out: group_dead).
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    if (!args->group_dead)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s64 *code = exit_codes.lookup(&tgid);
    s64 c = code ? *code : -1;
    exit_codes.delete(&tgid);
    if (!skip(K_EXIT)) {
        struct ev_num *e = ev_reserve(K_EXIT, sizeof(*e));
        if (e) {
            e->a[0] = 0;
            e->a[1] = c;  // -1: killed or exit status unknown
            ev_submit(e);
        }
    }
    parents.delete(&tgid);
    return 0;
}

// Working directory: successful chdir(path) and fchdir(fd) only (the enricher keeps proc.cwd).
TRACEPOINT_PROBE(syscalls, sys_enter_chdir)
{
    stash_put(K_CHDIR, SHAPE_STR1, 0, 0, 0, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_fchdir)
{
    stash_put(K_CHDIR, SHAPE_NUM, args->fd, 1, 0, 0, 0, 0, 0, 0);  // a[2] = 1: fchdir
    return 0;
}

// A successful chdir/fchdir: s1 = the argument as written ("" for fchdir),
// s2 = the new working directory as an absolute path (walked from the kernel's own).
static __always_inline int chdir_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s) || ret != 0)
        return 0;
    struct ev_str2 *e = ev_reserve(K_CHDIR, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = ret;
    if (!s.p[0] || bpf_probe_read_user_str(e->s1, sizeof(e->s1), (void *)s.p[0]) < 0)
        e->s1[0] = 0;
    if (base_dir(AT_FDCWD_, e->s2) < 0)
        e->s2[0] = 0;
    ev_submit(e);
    return 0;
}

SYS_EXIT(chdir, chdir_exit)

SYS_EXIT(fchdir, chdir_exit)
