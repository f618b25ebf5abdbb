// Files: open family (flags, mode, result), unlink, rename, chmod, symlink, link.
// Arguments are stashed at sys_enter; paths are read at sys_exit, when the
// kernel has faulted them in, together with the return value.
// a[]: open {ret, flags, mode, dirfd}; chmod {ret, mode, fd (fchmod) or dirfd}.

#define AT_FDCWD_ -100
#define AT_EMPTY_PATH_ 0x1000

// The filter plan's path part (shared/filterplan.py; loaded by services/probe/plan_maps.py).
// An open/unlink/chmod is stashed only when some rule can match its path:
//   - plan_any[kind] & cls: the rules want every path for this access class;
//   - a non-canonical path (//, /./, /../, any `../`) or one too long to judge: always
//     sent. A relative path is judged as <its base>/<path>, its leading `./` and `../`
//     folded (path_absolute); one that climbed also asks for the classes << CLS_CLIMBING;
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
// Plan values hold the classes wanted for any path in bits 0-2 and those wanted only when the
// path climbs (a relative path's leading `../`, folded in path_absolute: rules that test
// fd.nameraw contains "../") in bits 3-5; an event that climbs asks for both.
#define CLS_CLIMBING 3
#define CLS_ALL 0x3f
struct plan_key { u32 prefixlen; u8 kind; char s[PLAN_PATH_SZ]; };
BPF_LPM_TRIE(plan_prefix, struct plan_key, u8, PLAN_ENTRIES);
BPF_LPM_TRIE(plan_suffix, struct plan_key, u8, PLAN_ENTRIES);
BPF_ARRAY(plan_any, u8, K_MAX);
// The access classes of the suffixes (any kind) ending in each pair of bytes, keyed by
// last | second-to-last << 8 (a one-byte suffix under all 256 pairs it can end): most
// paths end in a pair no suffix ends in, and skip reversing their tail and the trie.
BPF_ARRAY(plan_tail, u8, 65536);
// Opens only (the node's most frequent path kind): the access classes of the open prefixes and
// exact paths whose two bytes after the leading '/' are these, keyed first | second << 8 (an
// entry shorter than that under every key it can start): most opens skip the prefix trie.
BPF_ARRAY(plan_open_head, u8, 65536);

// Scratch keys: [0] the path, [1] its tail reversed. The slack lets the scan
// below look a few bytes ahead without the verifier having to prove where the NUL is,
// and path_absolute() append a path after its base with bounds the verifier can see.
// [1]'s first four slack bytes say how path_absolute folded a relative path: `../` folded, bytes
// folded, relative, base length (read back through the map; dedup's salt).
struct plan_buf { struct plan_key k; char slack[PLAN_PATH_SZ + 16]; };  // room for base + path
BPF_PERCPU_ARRAY(plan_scratch, struct plan_buf, 2);

// Path resolution (needs the kernel's BTF: the loader passes -DOFF_<member>=<bytes>
// and HAVE_KOFF=1). Relative paths are resolved against the directory they are
// relative to (the working directory, or the dirfd's file), which is turned into
// an absolute path by walking its dentries up to the task's root, crossing
// mounts on the way, exactly as the process sees it (a container's /etc, not
// the host's overlay directory). Symlinks in the base are resolved; a relative
// argument's leading `./` and `../` are folded here, for the plan (path_absolute);
// the event's path is folded by user space (services/probe/paths.py).
#ifndef HAVE_KOFF
#define HAVE_KOFF 0
#endif
#define PW_DEPTH 32
#define DOTS_MAX 8       // leading `./` and `../` of a relative path folded in the kernel
#define PW_SZ 768        // scratch: the path is built right to left in [257, 512)
#define PW_END 512
// The walk's state lives in the map value, not in registers: the verifier then sees
// every iteration alike and checks the loop once instead of every branch history.
struct pw_buf { char b[PW_SZ]; u64 pos; char *mnt; char *dentry; char *mroot; u64 ups; u8 dn[48]; };
BPF_PERCPU_ARRAY(pw_scratch, struct pw_buf, 1);
BPF_PERCPU_ARRAY(pw_counts, u64, 2);  // [0] walks cut short (too deep/long), [1] unreadable

#if HAVE_KOFF
static __always_inline void *kptr(const void *p)
{
    void *v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), p);
    return v;
}

// Two pointer members of one struct (offsets from BTF): one read when they are adjacent, as a
// struct path's mnt and dentry are; else one each. The test on the offsets is folded at compile time.
static __always_inline void kptr_pair(const char *base, u32 off_a, u32 off_b, char **a, char **b)
{
    char *v[2] = {};
    if (off_b == off_a + 8) {
        bpf_probe_read_kernel(v, sizeof(v), base + off_a);
        *a = v[0];
        *b = v[1];
    } else if (off_a == off_b + 8) {
        bpf_probe_read_kernel(v, sizeof(v), base + off_b);
        *a = v[1];
        *b = v[0];
    } else {
        *a = kptr(base + off_a);
        *b = kptr(base + off_b);
    }
}

static __always_inline void pw_count(u32 i)
{
    u64 *c = pw_counts.lookup(&i);
    if (c)
        *c += 1;
}

// A dentry's parent and name (length, pointer): one read of the span they lie in when it is short
// (d_parent right before d_name, as in every kernel so far), else one read each. Offsets from BTF.
#define DN_PARENT OFF_DENTRY_PARENT
#define DN_LEN (OFF_DENTRY_NAME + OFF_QSTR_LEN)
#define DN_NAME (OFF_DENTRY_NAME + OFF_QSTR_NAME)
#define DN_MIN2(a, b) ((a) < (b) ? (a) : (b))
#define DN_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define DN_LO DN_MIN2(DN_PARENT, DN_MIN2(DN_LEN, DN_NAME))
#define DN_HI DN_MAX2(DN_PARENT + 8, DN_MAX2(DN_LEN + 4, DN_NAME + 8))
static __always_inline void dentry_link(struct pw_buf *w, char *d, char **parent, u32 *len, const char **name)
{
#if DN_HI - DN_LO <= 48
    if (bpf_probe_read_kernel(w->dn, DN_HI - DN_LO, d + DN_LO) < 0) {
        *parent = 0;
        return;
    }
    __builtin_memcpy(parent, &w->dn[DN_PARENT - DN_LO], sizeof(*parent));
    __builtin_memcpy(len, &w->dn[DN_LEN - DN_LO], sizeof(*len));
    __builtin_memcpy(name, &w->dn[DN_NAME - DN_LO], sizeof(*name));
#else
    *parent = kptr(d + DN_PARENT);
    *len = 0;
    bpf_probe_read_kernel(len, sizeof(*len), d + DN_LEN);
    *name = kptr(d + DN_NAME);
#endif
}

// The absolute path of (mnt, dentry) as the current task sees it, into out
// (STR_SZ bytes, NUL-terminated); its length without the NUL, or -1 (unknown), or NO_TREE_PATH
// for a dentry in no tree (a pipe's, socket's or memfd's). With `ups`, that of its
// ups-th parent, as `..` goes: across mounts, and never above the task's root.
#define NO_TREE_PATH -2
#define MNT_INTERNAL_ 0x4000
static __always_inline long path_walk(char *mnt, char *dentry, char *out, u32 ups)
{
    char *fs = kptr((char *)bpf_get_current_task() + OFF_TASK_FS);
    u32 zero = 0;
    struct pw_buf *w = pw_scratch.lookup(&zero);
    if (!fs || !w || !mnt || !dentry) {
        pw_count(1);
        return -1;
    }
    char *root_mnt, *root_dentry;
    kptr_pair(fs + OFF_FS_ROOT, OFF_PATH_MNT, OFF_PATH_DENTRY, &root_mnt, &root_dentry);
    w->pos = PW_END;
    w->mnt = mnt;
    w->dentry = dentry;
    w->mroot = kptr(mnt + OFF_VFSMOUNT_ROOT);  // read again only when the walk crosses a mount
    w->ups = ups;
    w->b[PW_END] = 0;
    int i;
    for (i = 0; i < PW_DEPTH; i++) {
        char *d = w->dentry, *mn = w->mnt;
        if (d == root_dentry && mn == root_mnt)
            break;
        if (d == w->mroot) {  // top of this mount: continue from its mount point
            char *m = mn - OFF_MOUNT_MNT;
            char *parent = kptr(m + OFF_MOUNT_PARENT);
            if (!parent) {  // unreadable: unknown, not the root
                pw_count(1);
                return -1;
            }
            if (parent == m)
                break;  // the global root (a task whose root is outside its namespace)
            w->dentry = kptr(m + OFF_MOUNT_MOUNTPOINT);
            w->mnt = parent + OFF_MOUNT_MNT;
            w->mroot = kptr(w->mnt + OFF_VFSMOUNT_ROOT);
            continue;
        }
        char *parent;
        u32 len;
        const char *name;
        dentry_link(w, d, &parent, &len, &name);
        if (!parent) {  // unreadable (a dentry's parent is never NULL): unknown, not the root
            pw_count(1);
            return -1;
        }
        if (parent == d) {  // a root that is not its mount's: on a kernel-internal mount (pipefs,
            // sockfs, a memfd's shm), a file of no directory tree; else a dentry disconnected from
            // its tree (open_by_handle_at, a file moved out of a bind mount): unknown
            int mflags = 0;
            bpf_probe_read_kernel(&mflags, sizeof(mflags), w->mnt + OFF_VFSMOUNT_FLAGS);
            if (mflags & MNT_INTERNAL_)
                return NO_TREE_PATH;
            pw_count(1);
            return -1;
        }
        if (w->ups) {  // a `..`: this name is not part of the path
            w->ups--;
            w->dentry = parent;
            continue;
        }
        u64 pos = w->pos;
        if (len > 255 || pos > PW_END || pos < 258 + len) {  // longer than STR_SZ: cut short
            pw_count(0);
            return -1;
        }
        pos -= len + 1;
        w->b[pos & 511] = '/';
        if (bpf_probe_read_kernel(&w->b[(pos + 1) & 511], len & 255, name) < 0) {  // not a path with holes
            pw_count(1);
            return -1;
        }
        w->pos = pos;
        w->dentry = parent;
    }
    if (i == PW_DEPTH) {
        pw_count(0);
        return -1;
    }
    u64 pos = w->pos;
    if (pos > PW_END || pos < 257)
        return -1;
    if (pos == PW_END)
        w->b[--pos & 511] = '/';  // the root itself
    u32 size = PW_END + 1 - pos;  // the path and its NUL, not the whole buffer: 2..256 bytes
    if (size > STR_SZ)
        size = STR_SZ;
    bpf_probe_read_kernel(out, size, &w->b[pos & 511]);
    return PW_END - pos;
}

// The struct file * of the current task's `fd`, or 0 (no such fd).
static __always_inline char *fd_file(s64 fd)
{
    char *files = kptr((char *)bpf_get_current_task() + OFF_TASK_FILES);
    char *fdt = files ? kptr(files + OFF_FILES_FDT) : 0;
    if (!fdt)
        return 0;
    char *max_fds, *fds;  // max_fds is an unsigned int: the low half of what is read (x86 is little-endian)
    kptr_pair(fdt, OFF_FDT_MAX, OFF_FDT_FD, &max_fds, &fds);
    if (fd < 0 || (u64)fd >= (u32)(u64)max_fds)
        return 0;
    return fds ? kptr((char **)fds + fd) : 0;
}

// The struct path * of the current task's `fd`, or of its working directory for AT_FDCWD
// when `cwd` (else 0); 0 if there is none.
static __always_inline char *fd_path(s64 fd, int cwd)
{
    if ((int)fd == AT_FDCWD_) {
        char *fs = cwd ? kptr((char *)bpf_get_current_task() + OFF_TASK_FS) : 0;
        return fs ? fs + OFF_FS_PWD : 0;
    }
    char *file = fd_file(fd);
    return file ? file + OFF_FILE_PATH : 0;
}

// path_walk of a struct path * (as fd_path gives them).
static __always_inline long struct_path_walk(char *p, char *out, u32 ups)
{
    char *mnt, *dentry;
    kptr_pair(p, OFF_PATH_MNT, OFF_PATH_DENTRY, &mnt, &dentry);
    return path_walk(mnt, dentry, out, ups);
}

// The directory a path argument is relative to: the working directory (AT_FDCWD)
// or the file of `dirfd`, as an absolute path into out (or its ups-th parent); < 0 if unknown.
static __always_inline long base_dir_up(s64 dirfd, char *out, u32 ups)
{
    char *p = fd_path(dirfd, 1);
    return p ? struct_path_walk(p, out, ups) : -1;
}

// AF_INET or AF_INET6 when the current task's `fd` is an inet socket, else 0: asked of
// the file itself for sockets the probe did not see made (before it started, received
// over a unix socket, an ia32 accept whose result was not known yet).
static __always_inline u16 fd_inet_family(s64 fd)
{
    char *file = fd_file(fd);
    char *inode = file ? kptr(file + OFF_FILE_INODE) : 0;
    u16 mode = 0;
    if (!inode || bpf_probe_read_kernel(&mode, sizeof(mode), inode + OFF_INODE_MODE) < 0 ||
        (mode & 0170000) != 0140000)  // S_IFSOCK
        return 0;
    char *sock = kptr(file + OFF_FILE_PRIVATE);  // struct socket *
    char *sk = sock ? kptr(sock + OFF_SOCKET_SK) : 0;
    u16 family = 0;
    if (!sk || bpf_probe_read_kernel(&family, sizeof(family), sk + OFF_SOCK_COMMON + OFF_SKC_FAMILY) < 0)
        return 0;
    return family == AF_INET_ || family == AF_INET6_ ? family : 0;
}
#else
static __always_inline long base_dir_up(s64 dirfd, char *out, u32 ups)
{
    return -1;
}

static __always_inline char *fd_path(s64 fd, int cwd)
{
    return 0;
}

static __always_inline long struct_path_walk(char *p, char *out, u32 ups)
{
    return -1;
}

static __always_inline u16 fd_inet_family(s64 fd)
{
    return 0;
}
#endif

static __always_inline long base_dir(s64 dirfd, char *out)
{
    return base_dir_up(dirfd, out, 0);
}

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
    for (u32 i = 0; i < PLAN_PATH_SZ - 5; i++) {  // a constant bound: s[i + 3] stays in the key
        if (i >= len)
            break;
        char c = s[i];
        if (c == '.') {  // `../` anywhere ("x../y" too): what fd.nameraw contains "../" tests
            if (s[i + 1] == '.' && s[i + 2] == '/')
                return 1;
            continue;
        }
        if (c != '/')
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

// plan_open_head's classes for `head`.
static __always_inline u8 open_head(u32 head)
{
    u8 *hv = plan_open_head.lookup(&head);
    return hv ? *hv : 0;
}

// 1 when an event of `kind`, access class `cls`, on the path in `k` (`len` bytes,
// -1 if unread) may match a rule.
static __always_inline int plan_wants(u32 kind, u8 cls, struct plan_key *k, long len, struct plan_key *r)
{
    u8 *any = plan_any.lookup(&kind);
    if (any && (*any & cls))
        return 1;
    if (len < 0 || path_unjudgeable(k->s, len))
        return 1;
    u32 head = (u8)k->s[1] | (u32)(u8)k->s[2] << 8;  // absolute here: s[0] is '/'
    // every class for kinds other than open (they always take the trie): no branch on the kind either
    u32 other = ((u64)(kind ^ K_OPEN) + 0xffffffffULL) >> 32;  // 0 for open, else 1
    u32 hv = open_head(head) | other * CLS_ALL;
    k->kind = kind;
    // the kind byte, the path and its NUL; when no open prefix starts with the path's pair, the kind
    // byte alone, which no entry is as short as: the lookup ends at the trie's root. One lookup either
    // way and no branch: branches here multiply what the verifier walks in the ia32 program.
    u32 deep = ((u32)(hv & cls) + CLS_ALL) >> 6;  // 0 or 1
    k->prefixlen = 8 + deep * (8 + 8 * len);
    u8 *v = plan_prefix.lookup(k);
    if (v && (*v & cls))
        return 1;
    u32 tail = (u8)k->s[(len - 1) & 0xff];  // len >= 1 here
    if (len >= 2)
        tail |= (u32)(u8)k->s[(len - 2) & 0xff] << 8;
    v = plan_tail.lookup(&tail);
    if (!v || !(*v & cls))
        return 0;
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

// In-kernel dedup of repeats (ProbeConfig.dedup_window_ms; 0 turns it off): an
// event like one sent less than a window ago (same process, uid, cgroup, comm,
// kind, flags, mode and path) is counted in its entry instead of sent. User space reports the count once
// the window is over and deletes the entry (services/probe/dedup.py); until then an
// expired entry with a count is left alone and later events go out as they come.
struct dedup_key {
    u64 cgroup_id; u64 path_hash; u32 kind; u32 flags; u32 mode; u32 pid; u32 uid; u32 pad; char comm[16];
};
struct dedup_val { u64 first_ts; u64 last_ts; u64 count; };
BPF_TABLE("lru_hash", struct dedup_key, struct dedup_val, dedup, 16384);
BPF_ARRAY(dedup_window, u64, 1);  // ns
#define DEDUP_STALE 8                   // windows without a report after which repeats are sent again

static __always_inline u64 fnv1a(const char *s, u32 len)
{
    u64 h = 0xcbf29ce484222325ULL;
    len &= 0xff;
    for (u32 i = 0; i < len; i++) {
        u32 j = i;
        asm volatile("" : "+r"(j));  // an index the verifier can bound (see the suffix loop)
        h ^= (u8)s[j & 0xff];
        h *= 0x100000001b3ULL;
    }
    return h;
}

// 1 when an event of `kind` keyed by `hash` (a path's, or another kind's object, never 0)
// repeats one sent within the window: it is then only counted.
static __always_inline int dedup_hit(u32 kind, u32 flags, u32 mode, u64 hash)
{
    u32 zero = 0;
    u64 *win = dedup_window.lookup(&zero);
    if (!win || !*win)
        return 0;
    struct dedup_key key = {};
    key.cgroup_id = bpf_get_current_cgroup_id();
    key.path_hash = hash;
    key.kind = kind;
    key.flags = flags;
    key.mode = mode;
    key.pid = bpf_get_current_pid_tgid() >> 32;
    key.uid = (u32)bpf_get_current_uid_gid();
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 now = bpf_ktime_get_boot_ns();
    struct dedup_val *v = dedup.lookup(&key);
    if (v) {
        // in its window, or past it with repeats user space has not reported yet (it reports
        // every counters interval): counted. A run of repeats is never sent at full rate between
        // a window's end and the report; only if no report came for DEDUP_STALE windows (the
        // probe's loop stuck) do events go out again.
        u64 age = now - v->first_ts;
        if (age < *win || (v->count && age < DEDUP_STALE * *win)) {
            __sync_fetch_and_add(&v->count, 1);
            v->last_ts = now;
            return 1;
        }
        if (v->count)
            return 0;
    }
    struct dedup_val fresh = {now, now, 0};
    dedup.update(&key, &fresh);
    return 0;
}

// 1 when this event repeats one sent within the window (it is then only counted);
// else *hash is its path hash (0 when not deduplicated), sent in a[4] for user space.
static __always_inline int dedup_repeat(u32 kind, u32 flags, u32 mode, const char *path, long len, u64 salt,
                                        u64 *hash)
{
    u32 zero = 0;
    u64 *win = dedup_window.lookup(&zero);
    if (!win || !*win || len < 0)
        return 0;
    *hash = fnv1a(path, len) ^ salt;
    return dedup_hit(kind, flags, mode, *hash);
}

// kb holds a relative path of n bytes (with its NUL): rewrite it as base/path,
// using rb as scratch. The new length, or -1 if the base is unknown or too long.
static __always_inline long path_absolute(struct plan_buf *kb, struct plan_buf *rb, long n, s64 dirfd, int fold)
{
    bpf_probe_read_kernel(rb->k.s, n & 0xff, kb->k.s);  // rb = the relative path (n < 251 bytes with its NUL)
    // Its leading `./` and `../` (and a last `.` or `..`, as tree walkers open to climb back) are
    // folded into the base: ups levels up, the rest from `at`. A `.` or `..` further on is left as
    // written (path_unjudgeable: user space judges it).
    u32 at = 0, ups = 0;
    for (int i = 0; fold && i < DOTS_MAX; i++) {
        char c0 = rb->k.s[at & 0xff], c1 = rb->k.s[(at + 1) & 0xff], c2 = rb->k.s[(at + 2) & 0xff];
        if (c0 != '.' || (c1 != '/' && c1 != 0 && c1 != '.'))
            break;                           // a name (".x" too)
        if (c1 != '.') {                     // "./" or a last "."
            at += c1 ? 2 : 1;
            if (!c1)
                break;
            continue;
        }
        if (c2 != '/' && c2 != 0)
            break;                           // "..x": a name
        ups++;                               // "../" or a last ".."
        at += c2 ? 3 : 2;
        if (!c2)
            break;
    }
    // through the map: the verifier goes on with one state, not one per way the loop ended
    rb->slack[0] = ups;
    rb->slack[1] = at;
    ups = *(volatile u8 *)&rb->slack[0] & 15;  // at most DOTS_MAX
    at = *(volatile u8 *)&rb->slack[1] & 31;   // at most 3 * DOTS_MAX
    long blen = base_dir_up(dirfd, kb->k.s, ups);
    if (blen <= 0)
        return -1;
    rb->slack[2] = 1;     // relative, and its base's length: with ups and at, dedup's salt (path_stash_fold)
    rb->slack[3] = blen;
    u32 rest = n - at;                       // what follows, with its NUL: 1 when nothing does
    if (rest <= 1)                           // the base alone, judged only when short enough
        return blen < PLAN_PATH_SZ - 5 ? blen : -1;
    u32 off = blen;
    if (blen > 1)
        kb->k.s[off++ & 0xff] = '/';
    if (off + rest >= PLAN_PATH_SZ - 4)
        return -1;
    // helpers, not byte loops: the verifier checks a loop once per iteration
    bpf_probe_read_kernel(&kb->k.s[off & 0xff], rest & 0xff, &rb->k.s[at & 0x3f]);
    return (off + rest - 1) & 0xff;
}

// sys_enter side of the path kinds: stash when the plan wants it and it is no
// repeat, else count it. `dflags` is what dedup compares besides the path. `fold`: a relative
// path's leading `./` and `../` are folded in the kernel (not in the ia32 program, whose verifier
// budget it exceeds: there they go to user space, as any `..` does).
static __always_inline void path_stash_fold(u32 kind, u8 cls, const char *path, s64 a1, s64 a2, s64 a3,
                                            u32 dflags, s64 dirfd, int fold)
{
    if (skip(kind))
        return;
    u32 zero = 0, one = 1;
    struct plan_buf *kb = plan_scratch.lookup(&zero);
    struct plan_buf *rb = plan_scratch.lookup(&one);
    if (!kb || !rb)
        return;
    long n = bpf_probe_read_user_str(kb->k.s, sizeof(kb->k.s), path);  // n counts the NUL
    // unreadable now (read again at exit), empty, or too long to judge: len -1
    long len = (n <= 1 || n >= PLAN_PATH_SZ - 4) ? -1 : ((n - 1) & 0xff);
    *(u32 *)rb->slack = 0;  // how path_absolute folded it: none yet (see there)
    if (len > 0 && kb->k.s[0] != '/')  // relative: judged as <its base directory>/<path>
        len = path_absolute(kb, rb, n, dirfd, fold);
    // whether it climbs (path_absolute left the `../` it folded in slack[0]), without a branch
    u8 climbs = ((*(volatile u8 *)&rb->slack[0] & 15) + 15) >> 4;
    cls |= (cls << CLS_CLIMBING) * climbs;
    if (!plan_wants(kind, cls, &kb->k, len, &rb->k)) {
        count_filtered(kind);
        return;
    }
    u64 hash = 0;
    // how the path was written is part of what is repeated: a read through `../../`, or by a
    // relative name from another base, is never counted as a repeat of another read of the file
    u64 salt = (u64)*(volatile u32 *)rb->slack << 32;
    // besides dflags: an open's mode, a chown's new group
    if (dedup_repeat(kind, dflags, kind == K_OPEN || kind == K_CHOWN ? (u32)a2 : 0, kb->k.s, len, salt, &hash))
        return;
    stash_store(kind, SHAPE_STR1, a1, a2, a3, hash, 0, path, 0, 0);
}

static __always_inline void path_stash(u32 kind, u8 cls, const char *path, s64 a1, s64 a2, s64 a3,
                                       u32 dflags, s64 dirfd)
{
    path_stash_fold(kind, cls, path, a1, a2, a3, dflags, dirfd, 1);
}

// sys_exit side of the path kinds (open, unlink, chmod by path): s1 is the path as
// written; a relative one also gets s2, the absolute directory it is relative to.
static __always_inline int path_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    s.a[0] = ret;
    char c = 0;
    bpf_probe_read_user(&c, 1, (void *)s.p[0]);
    if (c == '/' || c == 0 || s.shape != SHAPE_STR1) {
        if (s.shape != SHAPE_STR1)  // fchmod: no path
            return emit_num(s.kind, &s, ret);
        struct ev_str1 *e = ev_reserve(s.kind, sizeof(*e));
        if (!e)
            return 0;
        fill_str1(e, &s);
        ev_submit(e);
        return 0;
    }
    struct ev_str2 *e = ev_reserve(s.kind, sizeof(*e));
    if (!e)
        return 0;
    fill_str1((struct ev_str1 *)e, &s);  // s2: the base directory, below
    // the dirfd: open a[3], unlink a[1], chmod a[2]
    s64 dirfd = s.kind == K_OPEN ? s.a[3] : s.kind == K_UNLINK ? s.a[1] : s.a[2];
    if (base_dir(dirfd, e->s2) < 0)
        e->s2[0] = 0;
    ev_submit(e);
    return 0;
}

static __always_inline int open_exit(long ret)
{
    return path_exit(ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
    path_stash(K_OPEN, open_class(args->flags), args->filename, args->flags, args->mode, AT_FDCWD_, args->flags,
               AT_FDCWD_);
    return 0;
}

SYS_EXIT(open, open_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    path_stash(K_OPEN, open_class(args->flags), args->filename, args->flags, args->mode, args->dfd, args->flags,
               args->dfd);
    return 0;
}

SYS_EXIT(openat, open_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_creat)
{
    path_stash(K_OPEN, CLS_WRITE | CLS_CREATE, args->pathname, 01101 /* O_CREAT|O_WRONLY|O_TRUNC */, args->mode,
               AT_FDCWD_, 01101, AT_FDCWD_);
    return 0;
}

SYS_EXIT(creat, open_exit)

#if HAVE_TP(syscalls, sys_enter_openat2) && HAVE_TP(syscalls, sys_exit_openat2)
TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    struct { u64 flags; u64 mode; } how = {};
    bpf_probe_read_user(&how, sizeof(how), args->how);  // struct open_how: flags, mode first (UAPI)
    path_stash(K_OPEN, open_class(how.flags), args->filename, how.flags, how.mode, args->dfd, how.flags, args->dfd);
    return 0;
}

SYS_EXIT(openat2, open_exit)
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_unlink)
{
    path_stash(K_UNLINK, CLS_READ, args->pathname, AT_FDCWD_, 0, 0, 0, AT_FDCWD_);
    return 0;
}

SYS_EXIT(unlink, path_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat)
{
    path_stash(K_UNLINK, CLS_READ, args->pathname, args->dfd, args->flag, 0, args->flag, args->dfd);
    return 0;
}

SYS_EXIT(unlinkat, path_exit)

// Two-path kinds (rename, link, symlink): a[1] flags, a[2]/a[3] the dirfds the old
// and new paths are relative to (NO_BASE: not a path to resolve, a symlink's target).
#define NO_BASE -1
static __always_inline void path2_put(u32 kind, s64 flags, const char *oldp, const char *newp, s64 olddfd,
                                      s64 newdfd)
{
    stash_put(kind, SHAPE_STR2, flags, olddfd, newdfd, 0, 0, oldp, newp, 0);
}

// 1 when the user string at `p` is a relative path (its first byte is not '/').
static __always_inline int relative_at(u64 p)
{
    char c = '/';
    bpf_probe_read_user(&c, 1, (void *)p);
    return c != '/' && c != 0;
}

// sys_exit side of the two-path kinds: an ev_str2 when both paths are absolute,
// else an ev_path2 with the directory each relative one is relative to.
static __always_inline int path2_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    s.a[0] = ret;
    int rel_old = s.a[2] != NO_BASE && relative_at(s.p[0]);
    int rel_new = relative_at(s.p[1]);
    if (!rel_old && !rel_new) {
        struct ev_str2 *e = ev_reserve(s.kind, sizeof(*e));
        if (!e)
            return 0;
        fill_str2(e, &s);
        ev_submit(e);
        return 0;
    }
    struct ev_path2 *e = ev_reserve(s.kind, sizeof(*e));
    if (!e)
        return 0;
    fill_str2((struct ev_str2 *)e, &s);
    e->b1[0] = 0;
    e->b2[0] = 0;
    if (rel_old && base_dir(s.a[2], e->b1) < 0)
        e->b1[0] = 0;
    if (rel_new && base_dir(s.a[3], e->b2) < 0)
        e->b2[0] = 0;
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_rename)
{
    path2_put(K_RENAME, 0, args->oldname, args->newname, AT_FDCWD_, AT_FDCWD_);
    return 0;
}

SYS_EXIT(rename, path2_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_renameat)
{
    path2_put(K_RENAME, 0, args->oldname, args->newname, args->olddfd, args->newdfd);
    return 0;
}

SYS_EXIT(renameat, path2_exit)

#if HAVE_TP(syscalls, sys_enter_renameat2) && HAVE_TP(syscalls, sys_exit_renameat2)
TRACEPOINT_PROBE(syscalls, sys_enter_renameat2)
{
    path2_put(K_RENAME, args->flags, args->oldname, args->newname, args->olddfd, args->newdfd);
    return 0;
}

SYS_EXIT(renameat2, path2_exit)
#endif

// fchmod, fchown and ftruncate name their file by an fd (as fchownat and fchmodat2 do with
// AT_EMPTY_PATH and an empty path, or the working directory with AT_FDCWD). Entry keeps the
// fd's struct path (stash p[0]); at exit the kernel walks it, the plan judges it as it judges a
// path form's, and it goes out as the kind's one string (chmod's raw_path, chown's and truncate's
// path) with BY_FD in a[5]. Its symlinks are resolved, unlike a path argument's. If the fd names
// another file at exit than at entry (another thread's dup2 around the call: which one the call
// acted on is not known), the exit's is named (the entry's if the fd is closed by then) and sent
// unjudged. A file of no directory tree (a
// memfd's, a pipe's) is sent with "" and FD_NO_PATH (only when a rule takes any path), the
// enricher leaving it unnamed; one the kernel cannot walk (too deep, no BTF offsets) with "",
// for the enricher to name from the opens it saw.
static __always_inline void fd_stash(u32 kind, s64 a1, s64 a2, s64 a3)
{
    stash_put(kind, SHAPE_NUM, a1, a2, a3, 0, 0, fd_path(kind == K_CHOWN ? a3 : a2, 0), 0, 0);
}

static __always_inline int fd_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s) || s.shape != SHAPE_NUM)
        return 0;
    u32 kind = s.kind;
    if (kind != K_CHMOD && kind != K_CHOWN && kind != K_TRUNCATE)
        return 0;
    s.a[0] = ret;
    s.a[5] |= BY_FD;
    u32 zero = 0, one = 1;
    struct plan_buf *kb = plan_scratch.lookup(&zero);
    struct plan_buf *rb = plan_scratch.lookup(&one);
    if (!kb || !rb)
        return 0;
    char *p = (char *)s.p[0];
    s64 fd = kind == K_CHOWN ? s.a[3] : s.a[2];
    char *now = fd_path(fd, p != 0);
    int moved = now != p;
    p = now ? now : p;
    // through the map, as path_absolute passes its fold: the verifier goes on with one state, not
    // one per way the walk ended
    *(s32 *)rb->slack = p ? struct_path_walk(p, kb->k.s, 0) : -1;
    long wl = *(volatile s32 *)rb->slack;
    long len = (wl <= 0 || wl >= PLAN_PATH_SZ - 5 || moved) ? -1 : (wl & 0xff);  // 250 or more: unjudged
    if (wl == NO_TREE_PATH && !moved) {  // no path for a path test to match: wanted only for any path
        s.a[5] |= FD_NO_PATH;
        u8 *any = plan_any.lookup(&kind);
        if (!any || !(*any & CLS_READ)) {
            count_filtered(kind);
            return 0;
        }
    } else if (!plan_wants(kind, CLS_READ, &kb->k, len, &rb->k)) {
        count_filtered(kind);
        return 0;
    }
    u64 hash = 0;  // repeats as the path forms': the path and the new mode, owner (and group) or length
    if (dedup_repeat(kind, (u32)s.a[1], kind == K_CHOWN ? (u32)s.a[2] : 0, kb->k.s, len, BY_FD, &hash))
        return 0;
    s.a[4] = hash;
    struct ev_str1 *e = ev_reserve(kind, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->s1[0] = 0;
    if (wl > 0)  // the walk's path and its NUL
        bpf_probe_read_kernel(e->s1, (wl & 0xff) + 1, kb->k.s);
    ev_submit(e);
    return 0;
}

// 1 when the user string at `p` is empty (read at exit: at entry its page may not have been in).
static __always_inline int empty_at(const void *p)
{
    char c = 1;
    bpf_probe_read_user(&c, 1, p);
    return c == 0;
}

// fchownat's and fchmodat2's exit: with AT_EMPTY_PATH (AT_* flags in a[flags_at]) and an empty
// path the call acted on dirfd's own file (or the working directory): their stash becomes the
// fd form's, for fd_exit; 0 for a path form.
static __always_inline int empty_path_is_fd(u32 kind, int flags_at)
{
    u64 id = bpf_get_current_pid_tgid();
    struct stash *s = stash.lookup(&id);
    if (!s || s->kind != kind || s->shape != SHAPE_STR1 || !(s->a[flags_at & 7] & AT_EMPTY_PATH_) ||
        !empty_at((void *)s->p[0]))
        return 0;
    s64 dirfd = kind == K_CHOWN ? s->a[3] : s->a[2];
    s->shape = SHAPE_NUM;
    s->p[0] = (u64)fd_path(dirfd, 1);
    s->a[4] = 0;
    s->a[5] = 0;
    if (kind == K_CHMOD)
        s->a[3] = 0;
    return 1;
}

static __always_inline int chownat_exit(long ret)
{
    return empty_path_is_fd(K_CHOWN, 5) ? fd_exit(ret) : stash_emit(ret);
}

static __always_inline int chmodat2_exit(long ret)
{
    return empty_path_is_fd(K_CHMOD, 3) ? fd_exit(ret) : path_exit(ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_chmod)
{
    path_stash(K_CHMOD, CLS_READ, args->filename, args->mode, AT_FDCWD_, 0, args->mode, AT_FDCWD_);
    return 0;
}

SYS_EXIT(chmod, path_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat)
{
    path_stash(K_CHMOD, CLS_READ, args->filename, args->mode, args->dfd, 0, args->mode, args->dfd);
    return 0;
}

SYS_EXIT(fchmodat, path_exit)

#if HAVE_TP(syscalls, sys_enter_fchmodat2) && HAVE_TP(syscalls, sys_exit_fchmodat2)
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2)
{
    // AT_* flags in a[3]: with AT_EMPTY_PATH and an empty path, chmodat2_exit names the fd's file
    path_stash(K_CHMOD, CLS_READ, args->filename, args->mode, args->dfd, args->flags, args->mode, args->dfd);
    return 0;
}

SYS_EXIT(fchmodat2, chmodat2_exit)
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_fchmod)
{
    fd_stash(K_CHMOD, args->mode, args->fd, 0);
    return 0;
}

SYS_EXIT(fchmod, fd_exit)


// mkdir: a[] {ret, mode, dirfd, 0, hash}, the path judged by the plan like chmod's.
TRACEPOINT_PROBE(syscalls, sys_enter_mkdir)
{
    path_stash(K_MKDIR, CLS_READ, args->pathname, args->mode, AT_FDCWD_, 0, args->mode, AT_FDCWD_);
    return 0;
}

SYS_EXIT(mkdir, path_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_mkdirat)
{
    path_stash(K_MKDIR, CLS_READ, args->pathname, args->mode, args->dfd, 0, args->mode, args->dfd);
    return 0;
}

SYS_EXIT(mkdirat, path_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_symlink)
{
    path2_put(K_SYMLINK, 0, args->oldname, args->newname, NO_BASE, AT_FDCWD_);
    return 0;
}

SYS_EXIT(symlink, path2_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_symlinkat)
{
    path2_put(K_SYMLINK, 0, args->oldname, args->newname, NO_BASE, args->newdfd);
    return 0;
}

SYS_EXIT(symlinkat, path2_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_link)
{
    path2_put(K_LINK, 0, args->oldname, args->newname, AT_FDCWD_, AT_FDCWD_);
    return 0;
}

SYS_EXIT(link, path2_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_linkat)
{
    path2_put(K_LINK, args->flags, args->oldname, args->newname, args->olddfd, args->newdfd);
    return 0;
}

SYS_EXIT(linkat, path2_exit)

// Ownership and truncation (issue 9): chown family and truncate/ftruncate.
// Path forms go through the plan's path filter like chmod; fd forms (fchown,
// ftruncate) are named by fd_exit, as fchmod is.
// a[]: chown {ret, uid, gid, dirfd or fd, hash, flags}; truncate {ret, length, fd or dirfd, hash}.
// dflags (what dedup compares besides the path): the new owner / the new length.

// path_stash leaves a[5] free: chown keeps there the AT_* flags of fchownat
// (AT_SYMLINK_NOFOLLOW for lchown). Called right after path_stash (also by the ia32 programs).
static __always_inline void chown_flags(s64 flags)
{
    u64 id = bpf_get_current_pid_tgid();
    struct stash *s = stash.lookup(&id);
    if (s && s->kind == K_CHOWN)
        s->a[5] = (u32)flags;  // an int: never BY_FD
}

static __always_inline void chown_path(const char *path, s64 uid, s64 gid, s64 dirfd, s64 flags)
{
    path_stash(K_CHOWN, CLS_READ, path, (u32)uid, (u32)gid, dirfd, (u32)uid, dirfd);
    chown_flags(flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_chown)
{
    chown_path(args->filename, args->user, args->group, AT_FDCWD_, 0);
    return 0;
}

SYS_EXIT(chown, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_lchown)
{
    chown_path(args->filename, args->user, args->group, AT_FDCWD_, 0x100 /* AT_SYMLINK_NOFOLLOW */);
    return 0;
}

SYS_EXIT(lchown, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_fchownat)
{
    chown_path(args->filename, args->user, args->group, args->dfd, args->flag);
    return 0;
}

SYS_EXIT(fchownat, chownat_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_fchown)
{
    fd_stash(K_CHOWN, (u32)args->user, (u32)args->group, args->fd);
    return 0;
}

SYS_EXIT(fchown, fd_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_truncate)
{
    path_stash(K_TRUNCATE, CLS_READ, args->path, args->length, AT_FDCWD_, 0, (u32)args->length, AT_FDCWD_);
    return 0;
}

SYS_EXIT(truncate, stash_emit)

TRACEPOINT_PROBE(syscalls, sys_enter_ftruncate)
{
    fd_stash(K_TRUNCATE, args->length, args->fd, 0);
    return 0;
}

SYS_EXIT(ftruncate, fd_exit)
