// Files: open family (flags, mode, result), unlink, rename, chmod, symlink, link.
// Arguments are stashed at sys_enter; paths are read at sys_exit, when the
// kernel has faulted them in, together with the return value.
// a[]: open {ret, flags, mode, dirfd}; chmod {ret, mode, fd (fchmod) or dirfd}.

#define AT_FDCWD_ -100

// The filter plan's path part (shared/filterplan.py; loaded by services/probe/plan_maps.py).
// An open/unlink/chmod is stashed only when some rule can match its path:
//   - plan_any[kind] & cls: the rules want every path for this access class;
//   - a relative path, a non-canonical one (//, /./, /../) or one too long to
//     judge: user space resolves it, so it is always sent;
//   - plan_prefix: longest match of the path (kind byte first) among prefixes
//     and exact paths (stored with their NUL);
//   - plan_suffix: longest match of the path's last PLAN_SUFFIX_SZ bytes,
//     reversed, among reversed suffixes (fd.filename, endswith).
// A value is the access classes wanted; user space ORs each entry's value
// into every longer entry it is a prefix of, so the longest match says all.
// cls: READ 1, WRITE 2 (O_WRONLY, O_RDWR, O_TRUNC), CREATE 4 (O_CREAT); other kinds 1.
#define PLAN_PATH_SZ 255
#define PLAN_SUFFIX_SZ 64
#define PLAN_ENTRIES 8192
#define CLS_READ 1
#define CLS_WRITE 2
#define CLS_CREATE 4
struct plan_key { u32 prefixlen; u8 kind; char s[PLAN_PATH_SZ]; };
BPF_LPM_TRIE(plan_prefix, struct plan_key, u8, PLAN_ENTRIES);
BPF_LPM_TRIE(plan_suffix, struct plan_key, u8, PLAN_ENTRIES);
BPF_ARRAY(plan_any, u8, K_MAX);
// Scratch keys: [0] the path, [1] its tail reversed. The slack lets the scan
// below look a few bytes ahead without the verifier having to prove where the NUL is.
struct plan_buf { struct plan_key k; char slack[8]; };
BPF_PERCPU_ARRAY(plan_scratch, struct plan_buf, 2);

static __always_inline u8 open_class(s64 flags)
{
    u8 cls = (flags & 3) == 1 ? 0 : CLS_READ;  // O_RDONLY or O_RDWR reads
    if ((flags & 3) != 0 || (flags & 01000))    // O_WRONLY, O_RDWR, O_TRUNC
        cls |= CLS_WRITE;
    if (flags & 0100)                           // O_CREAT
        cls |= CLS_CREATE;
    return cls;
}

// 1 when the path may be one user space must judge itself (see above);
// `len` is its length without the NUL (masked: the verifier sees the bound).
static __always_inline int path_unjudgeable(const char *s, u32 len)
{
    if (s[0] != '/')
        return 1;
    len &= 0xff;
    for (u32 i = 0; i < len; i++) {
        if (s[i] != '/')
            continue;
        char c1 = s[i + 1];
        if (c1 == '/')
            return 1;
        if (c1 == '.') {
            char c2 = s[i + 2];
            if (c2 == '/' || c2 == 0)
                return 1;
            if (c2 == '.' && (s[i + 3] == '/' || s[i + 3] == 0))
                return 1;
        }
    }
    return 0;
}

// 1 when an event of `kind`, access class `cls`, on the user path `upath` may match a rule.
static __always_inline int plan_wants(u32 kind, u8 cls, const char *upath)
{
    u8 *any = plan_any.lookup(&kind);
    if (any && (*any & cls))
        return 1;
    u32 zero = 0, one = 1;
    struct plan_buf *kb = plan_scratch.lookup(&zero);
    struct plan_buf *rb = plan_scratch.lookup(&one);
    if (!kb || !rb)
        return 1;
    struct plan_key *k = &kb->k, *r = &rb->k;
    long n = bpf_probe_read_user_str(k->s, sizeof(k->s), upath);  // n counts the NUL
    if (n <= 1 || n >= PLAN_PATH_SZ - 4)
        return 1;  // unreadable now (read again at exit), empty, or too long to judge
    u32 len = (u32)(n - 1) & 0xff;
    if (path_unjudgeable(k->s, len))
        return 1;
    k->kind = kind;
    k->prefixlen = 8 + 8 * n;
    u8 *v = plan_prefix.lookup(k);
    if (v && (*v & cls))
        return 1;
    r->kind = kind;
    u32 m = 0;
    for (u32 i = 0; i < PLAN_SUFFIX_SZ && i < len; i++) {
        u32 j = len - 1 - i;           // from the last character backwards
        asm volatile("" : "+r"(j));    // keep the mask below: it is what the verifier checks
        r->s[i] = k->s[j & 0xff];
        m++;
    }
    r->prefixlen = 8 + 8 * m;
    v = plan_suffix.lookup(r);
    return v && (*v & cls);
}

// sys_enter side of the path kinds: stash when the plan wants it, else count it.
static __always_inline void path_stash(u32 kind, u8 cls, const char *path, s64 a1, s64 a2, s64 a3,
                                       u32 shape, const void *p1)
{
    if (skip(kind))
        return;
    if (!plan_wants(kind, cls, path)) {
        count_filtered(kind);
        return;
    }
    stash_store(kind, shape, a1, a2, a3, 0, 0, path, p1, 0);
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
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
    path_stash(K_OPEN, open_class(args->flags), args->filename, args->flags, args->mode, AT_FDCWD_, SHAPE_STR1, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_open)
{
    return open_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    path_stash(K_OPEN, open_class(args->flags), args->filename, args->flags, args->mode, args->dfd, SHAPE_STR1, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    return open_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_creat)
{
    path_stash(K_OPEN, CLS_WRITE | CLS_CREATE, args->pathname, 01101 /* O_CREAT|O_WRONLY|O_TRUNC */, args->mode,
               AT_FDCWD_, SHAPE_STR1, 0);
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
    path_stash(K_OPEN, open_class(how.flags), args->filename, how.flags, how.mode, args->dfd, SHAPE_STR1, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat2)
{
    return open_exit(args->ret);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_unlink)
{
    path_stash(K_UNLINK, CLS_READ, args->pathname, AT_FDCWD_, 0, 0, SHAPE_STR1, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_unlink)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat)
{
    path_stash(K_UNLINK, CLS_READ, args->pathname, args->dfd, args->flag, 0, SHAPE_STR1, 0);
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
    path_stash(K_CHMOD, CLS_READ, args->filename, args->mode, AT_FDCWD_, 0, SHAPE_STR1, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_chmod)
{
    return stash_emit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat)
{
    path_stash(K_CHMOD, CLS_READ, args->filename, args->mode, args->dfd, 0, SHAPE_STR1, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat)
{
    return stash_emit(args->ret);
}

#if HAVE_TP(syscalls, sys_enter_fchmodat2) && HAVE_TP(syscalls, sys_exit_fchmodat2)
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2)
{
    path_stash(K_CHMOD, CLS_READ, args->filename, args->mode, args->dfd, 0, SHAPE_STR1, 0);
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
