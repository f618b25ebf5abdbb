// Files: open family (flags, mode, result), unlink, rename, chmod, symlink, link.
// Arguments are stashed at sys_enter; paths are read at sys_exit, when the
// kernel has faulted them in, together with the return value.
// a[]: open {ret, flags, mode, dirfd}; chmod {ret, mode, fd (fchmod) or dirfd}.

#define AT_FDCWD_ -100

// Optional in-kernel filter (ProbeConfig.open_skip_prefixes): read-only opens
// of paths under these prefixes are not sent. Writes are always sent, and
// nothing is skipped by default: reads of /proc/<pid>/environ or /mem matter.
#define PREFIX_SZ 32
#define PREFIX_MAX 8
struct path_prefix { u32 len; char s[PREFIX_SZ]; };
BPF_ARRAY(open_skip_prefixes, struct path_prefix, PREFIX_MAX);  // packed from 0; len 0 ends the list

static __always_inline int skip_path(const char *path)
{
    for (int i = 0; i < PREFIX_MAX; i++) {
        u32 k = i;
        struct path_prefix *p = open_skip_prefixes.lookup(&k);
        if (!p || p->len == 0)
            return 0;
        int match = 1;
        for (int j = 0; j < PREFIX_SZ; j++) {
            if (j >= p->len)
                break;
            if (path[j] != p->s[j]) {
                match = 0;
                break;
            }
        }
        if (match)
            return 1;
    }
    return 0;
}

static __always_inline int open_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    struct ev_str1 *e = ev_reserve(K_OPEN, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = ret;
    if (bpf_probe_read_user_str(e->s1, sizeof(e->s1), (void *)s.p[0]) < 0)
        e->s1[0] = 0;
    if ((s.a[1] & 3) == 0 && skip_path(e->s1)) {  // O_RDONLY
        events.ringbuf_discard(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
    stash_put(K_OPEN, SHAPE_STR1, args->flags, args->mode, AT_FDCWD_, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_open)
{
    return open_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    stash_put(K_OPEN, SHAPE_STR1, args->flags, args->mode, args->dfd, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    return open_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_creat)
{
    stash_put(K_OPEN, SHAPE_STR1, 01101 /* O_CREAT|O_WRONLY|O_TRUNC */, args->mode, AT_FDCWD_, 0, 0, args->pathname, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_creat)
{
    return open_exit(args->ret);
}

#if HAVE_TP(syscalls, sys_enter_openat2) && HAVE_TP(syscalls, sys_exit_openat2)
TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    struct { u64 flags; u64 mode; } how = {};
    bpf_probe_read_user(&how, sizeof(how), args->how);  // struct open_how: flags, mode first (UAPI)
    stash_put(K_OPEN, SHAPE_STR1, how.flags, how.mode, args->dfd, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat2)
{
    return open_exit(args->ret);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_unlink)
{
    stash_put(K_UNLINK, SHAPE_STR1, AT_FDCWD_, 0, 0, 0, 0, args->pathname, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_unlink)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat)
{
    stash_put(K_UNLINK, SHAPE_STR1, args->dfd, args->flag, 0, 0, 0, args->pathname, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_unlinkat)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_rename)
{
    stash_put(K_RENAME, SHAPE_STR2, 0, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_rename)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_renameat)
{
    stash_put(K_RENAME, SHAPE_STR2, 0, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_renameat)
{
    return stash_emit(args->ret);
}

#if HAVE_TP(syscalls, sys_enter_renameat2) && HAVE_TP(syscalls, sys_exit_renameat2)
TRACEPOINT_PROBE(syscalls, sys_enter_renameat2)
{
    stash_put(K_RENAME, SHAPE_STR2, args->flags, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_renameat2)
{
    return stash_emit(args->ret);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_chmod)
{
    stash_put(K_CHMOD, SHAPE_STR1, args->mode, AT_FDCWD_, 0, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_chmod)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat)
{
    stash_put(K_CHMOD, SHAPE_STR1, args->mode, args->dfd, 0, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat)
{
    return stash_emit(args->ret);
}

#if HAVE_TP(syscalls, sys_enter_fchmodat2) && HAVE_TP(syscalls, sys_exit_fchmodat2)
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2)
{
    stash_put(K_CHMOD, SHAPE_STR1, args->mode, args->dfd, 0, 0, 0, args->filename, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat2)
{
    return stash_emit(args->ret);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_fchmod)
{
    stash_put(K_CHMOD, SHAPE_NUM, args->mode, args->fd, 0, 0, 0, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_fchmod)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_symlink)
{
    stash_put(K_SYMLINK, SHAPE_STR2, 0, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_symlink)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_symlinkat)
{
    stash_put(K_SYMLINK, SHAPE_STR2, 0, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_symlinkat)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_link)
{
    stash_put(K_LINK, SHAPE_STR2, 0, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_link)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_linkat)
{
    stash_put(K_LINK, SHAPE_STR2, args->flags, 0, 0, 0, 0, args->oldname, args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_linkat)
{
    return stash_emit(args->ret);
}
