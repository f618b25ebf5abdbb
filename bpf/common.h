// Shared by every bpf/*.bpf.c file: the probe compiles them all into one
// bcc object (services/probe/loader.py), so maps and helpers here exist once.
//
// Portability rule: tracepoint arguments, BPF helpers and user memory (UAPI
// structs) only; never kernel struct offsets.
//
// Every event starts with struct ev_head; kind-specific numbers go in a[]
// (a[0] is always the syscall's return value) and strings follow in one of
// the shapes below. services/probe/decode.py turns them into dicts; it reads
// the K_* numbers from this file, so they are defined only here.
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/capability.h>

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef IDLE_GAP_MS
#define IDLE_GAP_MS 100  // a record after this long without one wakes the reader (services/probe/service.py)
#endif
#ifndef WAKEUP_EVERY
#define WAKEUP_EVERY 64  // wake user space once per this many events per CPU
#endif

// HAVE_TP(cat, name) is 1 when the loader found that tracepoint in tracefs
// (it passes -DHAVE_TP_cat__name=1); guard optional probes with #if HAVE_TP().
#define HAVE_TP(c, e) HAVE_TP_##c##__##e

// Event kinds: class = kind / 10 (0 process, 1 file, 2 net, 3 priv, 4 kernel).
#define K_EXEC 1
#define K_EXIT 2
#define K_FORK 3
#define K_CHDIR 4
#define K_OPEN 10
#define K_UNLINK 11
#define K_RENAME 12
#define K_CHMOD 13
#define K_SYMLINK 14
#define K_LINK 15
#define K_CHOWN 16
#define K_TRUNCATE 17
#define K_MKDIR 18
#define K_CONNECT 20
#define K_ACCEPT 21
#define K_LISTEN 22
#define K_SOCKET 23
#define K_DUP 24
#define K_DNS 25
#define K_PTRACE 30
#define K_SETUID 31
#define K_SETGID 32
#define K_CAPSET 33
#define K_UNSHARE 34
#define K_SETNS 35
#define K_SIGNAL 36
#define K_PROCVM 37
#define K_EXECENV 38
#define K_USERFAULTFD 39
#define K_MOUNT 40
#define K_BPF 41
#define K_MODULE 42
#define K_MEMFD 43
#define K_UMOUNT 44
#define K_MPROTECT 45
#define K_OOM 46
#define K_IOURING 47
#define K_CGROUP 48
#define K_MAX 49

#define CLASS_EXEC 0
#define CLASS_FILE 1
#define CLASS_NET 2

#define STR_SZ 256
#define STR3_SZ 32
#define SA_SZ 128
#define ARGV_SZ 1024
#define ARG_MAX_LEN 256
#define ARGC_MAX 20

struct ev_head {
    u64 ts;         // bpf_ktime_get_boot_ns(); decode.py adds the wall-clock offset
    u64 cgroup_id;
    u32 kind;
    u32 pid;        // tgid
    u32 tid;
    u32 ppid;       // from the parents map (0 = unknown)
    u32 uid;
    u32 gid;
    char comm[16];
};

// Shapes: which one a kind uses is fixed per kind (decode.py knows).
struct ev_num   { struct ev_head h; s64 a[6]; };
struct ev_str1  { struct ev_head h; s64 a[6]; char s1[STR_SZ]; };
struct ev_str2  { struct ev_head h; s64 a[6]; char s1[STR_SZ]; char s2[STR_SZ]; };
struct ev_str3  { struct ev_head h; s64 a[6]; char s1[STR_SZ]; char s2[STR_SZ]; char s3[STR3_SZ]; };
// rename/link/symlink with a relative path: b1/b2 = the absolute directories s1/s2
// are relative to ("" when absolute, or for a symlink's target, which is contents).
struct ev_path2 { struct ev_head h; s64 a[6]; char s1[STR_SZ]; char s2[STR_SZ]; char b1[STR_SZ]; char b2[STR_SZ]; };
// net: sa = the raw user sockaddr (peer for connect/accept, local for listen);
// la = local address remembered from bind(), for accept.
struct ev_sock  { struct ev_head h; s64 a[6]; u8 sa[SA_SZ]; u8 la[16]; };
// exec: a[1] = bytes used in argv, a[2] = argc seen, a[3] = 1 if argv truncated,
// a[4] = controlling tty (Falco's proc.tty: new_encode_dev; 0 none, -1 unknown),
// a[5] = permitted capability mask after the exec (-1 unknown); cap_bset = its bounding set
// (what the container was granted: a non-root process has none permitted but may regain these);
// base = the absolute directory a relative filename is relative to ("" otherwise)
// dns (bpf/dns.bpf.c): a[0] = payload bytes on the wire, a[1] = bytes copied to data,
// a[2] = direction (0 query sent, 1 answer received), a[3] = family, a[4] = IP protocol
// (6 tcp, 17 udp), a[5] = local port << 16 | remote port; addresses as in the IP header.
#define DNS_PAYLOAD_SZ 512
struct ev_dns { struct ev_head h; union { s64 a[6]; struct { s64 len, copied, direction, family, proto, ports; }; }; u8 laddr[16]; u8 raddr[16]; u8 data[DNS_PAYLOAD_SZ]; };
struct ev_exec { struct ev_head h; union { s64 a[6]; struct { s64 ret, argv_len, argc, argv_truncated, tty, cap_permitted; }; }; char filename[STR_SZ]; char argv[ARGV_SZ + ARG_MAX_LEN]; char base[STR_SZ]; s64 cap_bset; };

// exec environment (K_EXECENV, bpf/process.bpf.c): "NAME=value" strings of the
// watched variables found in envp at execve entry. a[1] = envp entries looked at,
// a[2] = 1 if envp was longer than ENV_SCAN_MAX or more than ENV_SLOTS matched, a[3] = slots used.
#define ENV_SCAN_MAX 128
#define ENV_SLOTS 4
#define ENV_VAL_SZ 256
struct ev_env   { struct ev_head h; s64 a[6]; char vars[ENV_SLOTS][ENV_VAL_SZ]; };

// Each kind's event, named: the same bytes as its shape above (a kind's a[0..5] are
// its first six s64, a[0] always the return value; `_n` = slot n unused; exec and dns
// name them in their own shapes). The BPF side fills the shapes; services/probe/decode.py
// reads every `struct ev_<kind> { struct ev_head h; ... };` line and decodes each kind
// by it. A string member past the end of a shorter record (e.g. chmod's path for
// fchmod, a base only for relative paths) is absent.
struct ev_exit       { struct ev_head h; s64 ret, exit_code, _2, _3, _4, _5; };
struct ev_fork       { struct ev_head h; s64 ret, child_pid, clone_flags, _3, _4, _5; };
struct ev_chdir      { struct ev_head h; s64 ret, fd, is_fchdir, _3, _4, _5; char raw_path[STR_SZ]; char cwd[STR_SZ]; };
struct ev_open       { struct ev_head h; s64 ret, flags, mode, dirfd, path_hash, _5; char raw_path[STR_SZ]; char base[STR_SZ]; };
struct ev_unlink     { struct ev_head h; s64 ret, dirfd, flags, _3, path_hash, _5; char raw_path[STR_SZ]; char base[STR_SZ]; };
struct ev_rename     { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; char raw_oldpath[STR_SZ]; char raw_newpath[STR_SZ]; char old_base[STR_SZ]; char new_base[STR_SZ]; };
struct ev_link       { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; char raw_oldpath[STR_SZ]; char raw_newpath[STR_SZ]; char old_base[STR_SZ]; char new_base[STR_SZ]; };
struct ev_symlink    { struct ev_head h; s64 ret, _1, _2, _3, _4, _5; char raw_target[STR_SZ]; char raw_path[STR_SZ]; char _b1[STR_SZ]; char base[STR_SZ]; };
struct ev_chmod      { struct ev_head h; s64 ret, mode, dirfd, _3, path_hash, flags; char raw_path[STR_SZ]; char base[STR_SZ]; };
struct ev_mkdir      { struct ev_head h; s64 ret, mode, dirfd, _3, path_hash, _5; char raw_path[STR_SZ]; char base[STR_SZ]; };
// chmod, chown, truncate: `flags` has BY_FD when the call named its file by an fd (fchmod,
// fchown, ftruncate, or fchownat/fchmodat2 with AT_EMPTY_PATH: `dirfd` is that fd, the string
// its path as the kernel walked it, "" if unknown), and FD_NO_PATH too when the file has none
// (a pipe's, a memfd's); chown's low 32 bits are fchownat's AT_* flags.
#define BY_FD 4294967296
#define FD_NO_PATH 8589934592
struct ev_chown      { struct ev_head h; s64 ret, owner_uid, owner_gid, dirfd, path_hash, flags; char path[STR_SZ]; };
struct ev_truncate   { struct ev_head h; s64 ret, length, dirfd, _3, path_hash, flags; char path[STR_SZ]; };
struct ev_connect    { struct ev_head h; s64 ret, fd, addrlen, type, _4, _5; u8 sa[SA_SZ]; u8 la[16]; };
struct ev_accept     { struct ev_head h; s64 ret, fd, type, lport, lfamily, _5; u8 sa[SA_SZ]; u8 la[16]; };
struct ev_listen     { struct ev_head h; s64 ret, fd, backlog, lport, lfamily, _5; u8 sa[SA_SZ]; u8 la[16]; };
struct ev_socket     { struct ev_head h; s64 ret, family, type, protocol, _4, _5; };
struct ev_dup        { struct ev_head h; s64 ret, oldfd, newfd, is_sock, syscall, origin; };
struct ev_ptrace     { struct ev_head h; s64 ret, request, target_pid, _3, dedup_key, _5; };
struct ev_setuid     { struct ev_head h; s64 ret, id, eid, sid, syscall, caller_ids; };
struct ev_setgid     { struct ev_head h; s64 ret, id, eid, sid, syscall, caller_ids; };
struct ev_capset     { struct ev_head h; s64 ret, _1, _2, _3, _4, _5; };
struct ev_unshare    { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; };
struct ev_setns      { struct ev_head h; s64 ret, fd, nstype, _3, _4, _5; };
struct ev_signal     { struct ev_head h; s64 ret, target_pid, sig, _3, _4, _5; };
struct ev_procvm     { struct ev_head h; s64 ret, target_pid, write, riovcnt, dedup_key, _5; };
struct ev_execenv    { struct ev_head h; s64 ret, env_scanned, env_truncated, slots, _4, _5; char vars[ENV_SLOTS][ENV_VAL_SZ]; };
struct ev_userfaultfd { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; };
struct ev_mount      { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; char source[STR_SZ]; char target[STR_SZ]; char fstype[STR3_SZ]; };
struct ev_bpf        { struct ev_head h; s64 ret, cmd, prog_type, _3, _4, _5; };
struct ev_module     { struct ev_head h; s64 ret, fd, flags, is_finit, _4, _5; char params[STR_SZ]; };
struct ev_memfd      { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; char name[STR_SZ]; };
struct ev_umount     { struct ev_head h; s64 ret, flags, _2, _3, _4, _5; char target[STR_SZ]; };
struct ev_mprotect   { struct ev_head h; s64 ret, addr, len, prot_syscall, mmap_flags, mmap_fd; };
struct ev_oom        { struct ev_head h; s64 ret, victim_pid, total_vm, anon_rss, file_rss, victim_uid; char victim_comm[STR_SZ]; };
// cgroup (cgroup:cgroup_mkdir, bpf/process.bpf.c): a cgroup directory made; its id (the inode
// bpf_get_current_cgroup_id() gives its tasks), hierarchy (0: the v2 hierarchy) and path from the
// hierarchy's root. Sent whatever the plan: the enricher learns which container a new id is from it,
// in kernel order, before the container's first event (a cgroup may be gone before anyone can stat it).
struct ev_cgroup     { struct ev_head h; s64 ret, new_cgroup_id, level, hierarchy, _4, _5; char path[STR_SZ + STR_SZ]; };
struct ev_iouring    { struct ev_head h; s64 ret, opcode, fd, sq_entries, flags, sq_thread; char op[STR_SZ]; };

// ... byte for byte:
_Static_assert(sizeof(struct ev_exit) == sizeof(struct ev_num), "ev_exit is ev_num");
_Static_assert(sizeof(struct ev_fork) == sizeof(struct ev_num), "ev_fork is ev_num");
_Static_assert(sizeof(struct ev_socket) == sizeof(struct ev_num), "ev_socket is ev_num");
_Static_assert(sizeof(struct ev_dup) == sizeof(struct ev_num), "ev_dup is ev_num");
_Static_assert(sizeof(struct ev_ptrace) == sizeof(struct ev_num), "ev_ptrace is ev_num");
_Static_assert(sizeof(struct ev_setuid) == sizeof(struct ev_num), "ev_setuid is ev_num");
_Static_assert(sizeof(struct ev_setgid) == sizeof(struct ev_num), "ev_setgid is ev_num");
_Static_assert(sizeof(struct ev_capset) == sizeof(struct ev_num), "ev_capset is ev_num");
_Static_assert(sizeof(struct ev_unshare) == sizeof(struct ev_num), "ev_unshare is ev_num");
_Static_assert(sizeof(struct ev_setns) == sizeof(struct ev_num), "ev_setns is ev_num");
_Static_assert(sizeof(struct ev_signal) == sizeof(struct ev_num), "ev_signal is ev_num");
_Static_assert(sizeof(struct ev_procvm) == sizeof(struct ev_num), "ev_procvm is ev_num");
_Static_assert(sizeof(struct ev_userfaultfd) == sizeof(struct ev_num), "ev_userfaultfd is ev_num");
_Static_assert(sizeof(struct ev_bpf) == sizeof(struct ev_num), "ev_bpf is ev_num");
_Static_assert(sizeof(struct ev_mprotect) == sizeof(struct ev_num), "ev_mprotect is ev_num");
_Static_assert(sizeof(struct ev_chown) == sizeof(struct ev_str1), "ev_chown is ev_str1");
_Static_assert(sizeof(struct ev_truncate) == sizeof(struct ev_str1), "ev_truncate is ev_str1");
_Static_assert(sizeof(struct ev_module) == sizeof(struct ev_str1), "ev_module is ev_str1");
_Static_assert(sizeof(struct ev_memfd) == sizeof(struct ev_str1), "ev_memfd is ev_str1");
_Static_assert(sizeof(struct ev_umount) == sizeof(struct ev_str1), "ev_umount is ev_str1");
_Static_assert(sizeof(struct ev_oom) == sizeof(struct ev_str1), "ev_oom is ev_str1");
_Static_assert(sizeof(struct ev_iouring) == sizeof(struct ev_str1), "ev_iouring is ev_str1");
_Static_assert(sizeof(struct ev_chdir) == sizeof(struct ev_str2), "ev_chdir is ev_str2");
_Static_assert(sizeof(struct ev_cgroup) == sizeof(struct ev_str2), "ev_cgroup is ev_str2");
_Static_assert(sizeof(struct ev_open) == sizeof(struct ev_str2), "ev_open is ev_str2");
_Static_assert(sizeof(struct ev_unlink) == sizeof(struct ev_str2), "ev_unlink is ev_str2");
_Static_assert(sizeof(struct ev_chmod) == sizeof(struct ev_str2), "ev_chmod is ev_str2");
_Static_assert(sizeof(struct ev_mkdir) == sizeof(struct ev_str2), "ev_mkdir is ev_str2");
_Static_assert(sizeof(struct ev_mount) == sizeof(struct ev_str3), "ev_mount is ev_str3");
_Static_assert(sizeof(struct ev_rename) == sizeof(struct ev_path2), "ev_rename is ev_path2");
_Static_assert(sizeof(struct ev_link) == sizeof(struct ev_path2), "ev_link is ev_path2");
_Static_assert(sizeof(struct ev_symlink) == sizeof(struct ev_path2), "ev_symlink is ev_path2");
_Static_assert(sizeof(struct ev_connect) == sizeof(struct ev_sock), "ev_connect is ev_sock");
_Static_assert(sizeof(struct ev_accept) == sizeof(struct ev_sock), "ev_accept is ev_sock");
_Static_assert(sizeof(struct ev_listen) == sizeof(struct ev_sock), "ev_listen is ev_sock");
_Static_assert(sizeof(struct ev_execenv) == sizeof(struct ev_env), "ev_execenv is ev_env");

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(lost, u64, K_MAX);          // reserve failures per kind
BPF_PERCPU_ARRAY(submitted, u64, 1);         // events submitted on this CPU (wakeup pacing)
BPF_ARRAY(last_submit, u64, 1);               // when a record was last submitted (ns, any CPU; to 1 ms)
BPF_ARRAY(kind_on, u8, K_MAX);               // per-kind switch from the filter plan: 1 on, 2 containers only
BPF_ARRAY(host_mnt_ns, u32, 1);              // inode of the node's initial mount namespace (0: unknown)
BPF_PERCPU_ARRAY(filtered, u64, K_MAX);      // events the filter plan kept in the kernel, per kind
BPF_HASH(excluded, u32, u8, 1024);           // tgids never traced (our own services)
BPF_HASH(parents, u32, u32, 65536);          // tgid -> parent tgid (fork, /proc at start)

struct cg_count { u64 n[4]; };               // per class: exec, file, net (n[3] unused)
BPF_HASH(cg_counts, u64, struct cg_count, 4096);

// A syscall's arguments kept from sys_enter to sys_exit (one per thread).
#define AF_INET_ 2
#define AF_INET6_ 10

// The sys_exit side of a syscall whose exit only hands its result to `helper`
// (services/probe/loader.py reads these as the tracepoint syscalls:sys_exit_<event>).
#define SYS_EXIT(event, helper) \
    TRACEPOINT_PROBE(syscalls, sys_exit_##event) { return helper(args->ret); }

// a[0] of an event whose syscall has not returned yet (an ia32 call before the exit
// program is attached, bpf/syscalls_ia32.bpf.c): no errno, and < 0 so no fd is remembered.
#define RET_UNKNOWN (-0x10000000000LL)

struct stash {
    u32 kind;
    u32 shape;
    s64 a[6];
    u64 p[3];  // user pointers to strings (or a struct) read at exit,
               // when the kernel has already paged them in
};
BPF_HASH(stash, u64, struct stash, 16384);

#define SHAPE_NUM 0
#define SHAPE_STR1 1
#define SHAPE_STR2 2
#define SHAPE_STR3 3

static __always_inline void count_cgroup(u64 cg, u32 kind);

// An event the filter plan does not want: counted per kind and per cgroup, never sent.
static __always_inline void count_filtered(u32 kind)
{
    u64 *c = filtered.lookup(&kind);
    if (c)
        *c += 1;  // per-cpu slot
    count_cgroup(bpf_get_current_cgroup_id(), kind);
}

#if HAVE_KOFF
#define TS_COMPAT_ 0x0002
// 1 while the current task makes an ia32 syscall (TS_COMPAT in its thread_info status):
// the syscall number is then the i386 one.
static __always_inline int task_in_ia32(void)
{
    u32 status = 0;
    bpf_probe_read_kernel(&status, sizeof(status), (char *)bpf_get_current_task() + OFF_TASK_TI + OFF_TI_STATUS);
    return status & TS_COMPAT_;
}
#endif

// 1 when the current task is in the node's initial mount namespace: a host process (every
// container has a mount namespace of its own; a host service with a private one passes as a
// container, which only sends more). 0 when unknown (no BTF offsets, namespace not set).
static __always_inline int in_host_mnt_ns(void)
{
#if HAVE_KOFF
    u32 zero = 0;
    u32 *host = host_mnt_ns.lookup(&zero);
    if (!host || !*host)
        return 0;
    char *task = (char *)bpf_get_current_task();
    char *nsp = 0, *mnt = 0;
    u32 inum = 0;
    bpf_probe_read_kernel(&nsp, sizeof(nsp), task + OFF_TASK_NSPROXY);
    if (!nsp)
        return 0;
    bpf_probe_read_kernel(&mnt, sizeof(mnt), nsp + OFF_NSPROXY_MNT);
    if (!mnt)
        return 0;
    bpf_probe_read_kernel(&inum, sizeof(inum), mnt + OFF_MNTNS_NS + OFF_NS_INUM);
    return inum == *host;
#else
    return 0;
#endif
}

// 1 when events of `kind` from the current task are not wanted.
static __always_inline int skip(u32 kind)
{
    u8 *on = kind_on.lookup(&kind);
    if (!on || !*on || (*on == 2 && in_host_mnt_ns())) {
        count_filtered(kind);
        return 1;
    }
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    return excluded.lookup(&tgid) ? 1 : 0;
}

static __always_inline void count_lost(u32 kind)
{
    u64 *c = lost.lookup(&kind);
    if (c)
        *c += 1;  // per-cpu slot: no atomic needed
}

static __always_inline void count_cgroup(u64 cg, u32 kind)
{
    u32 cls = kind / 10;
    if (cg <= 1 || cls > CLASS_NET)  // root cgroup (host) or a class without counter
        return;
    struct cg_count *c = cg_counts.lookup(&cg);
    if (!c) {
        struct cg_count zero = {};
        cg_counts.insert(&cg, &zero);  // BPF_NOEXIST: a racing CPU's counts survive
        c = cg_counts.lookup(&cg);
        if (!c)
            return;  // map full: counts for new cgroups are dropped
    }
    __sync_fetch_and_add(&c->n[cls & 3], 1);
}

static __always_inline void fill_head(struct ev_head *h, u32 kind)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 ug = bpf_get_current_uid_gid();
    u32 tgid = id >> 32;
    h->ts = bpf_ktime_get_boot_ns();
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->kind = kind;
    h->pid = tgid;
    h->tid = (u32)id;
    u32 *pp = parents.lookup(&tgid);
    h->ppid = pp ? *pp : 0;
    h->uid = (u32)ug;
    h->gid = ug >> 32;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
    count_cgroup(h->cgroup_id, kind);
}

// Reserve an event of `size` bytes with its head filled; NULL (and counted) if the ring is full.
static __always_inline void *ev_reserve(u32 kind, u32 size)
{
    struct ev_head *h = events.ringbuf_reserve(size);
    if (!h) {
        count_lost(kind);
        return 0;
    }
    fill_head(h, kind);
    return h;
}

// Submit without a wakeup per event: user space polls with a short timeout while records come
// and is woken early once per WAKEUP_EVERY events per CPU (batching). A record after more than
// IDLE_GAP_MS without one wakes it at once: a reader that has seen nothing for longer than that
// waits with long timeouts (services/probe/service.py _read_loop), so a quiet node costs a few
// wakeups a second and its first event is read at once.
static __always_inline void ev_submit(void *e)
{
    u32 zero = 0;
    u64 *n = submitted.lookup(&zero);
    u64 *last = last_submit.lookup(&zero);
    u64 now = bpf_ktime_get_ns();
    u64 flags = BPF_RB_NO_WAKEUP;
    if (n && (++*n % WAKEUP_EVERY) == 0)
        flags = BPF_RB_FORCE_WAKEUP;
    if (last) {
        u64 gap = now - *last;
        if (gap > IDLE_GAP_MS * 1000000ULL)
            flags = BPF_RB_FORCE_WAKEUP;
        if (gap > 1000000ULL)  // written at most once a millisecond: one cache line all CPUs share
            *last = now;
    }
    events.ringbuf_submit(e, flags);
}

// sys_enter side of a stashed syscall, once the event is known to be wanted.
static __always_inline void stash_store(u32 kind, u32 shape, s64 a1, s64 a2, s64 a3, s64 a4, s64 a5,
                                        const void *p0, const void *p1, const void *p2)
{
    u64 id = bpf_get_current_pid_tgid();
    struct stash s = {};
    s.kind = kind;
    s.shape = shape;
    s.a[1] = a1; s.a[2] = a2; s.a[3] = a3; s.a[4] = a4; s.a[5] = a5;
    s.p[0] = (u64)p0; s.p[1] = (u64)p1; s.p[2] = (u64)p2;
    if (stash.update(&id, &s) < 0)
        count_lost(kind);  // stash full (threads stuck in syscalls): counted, not silent
}

// sys_enter side of a stashed syscall.
static __always_inline void stash_put(u32 kind, u32 shape, s64 a1, s64 a2, s64 a3, s64 a4, s64 a5,
                                      const void *p0, const void *p1, const void *p2)
{
    if (!skip(kind))
        stash_store(kind, shape, a1, a2, a3, a4, a5, p0, p1, p2);
}

// sys_exit side: take the stash of this thread (copied to `out`); 0 if none.
static __always_inline int stash_take(struct stash *out)
{
    u64 id = bpf_get_current_pid_tgid();
    struct stash *s = stash.lookup(&id);
    if (!s)
        return 0;
    __builtin_memcpy(out, s, sizeof(*out));
    stash.delete(&id);
    return 1;
}

// The numbers of `s` and its first user string, into an event laid out like ev_str1
// (every string shape begins the same way).
static __always_inline void fill_str1(struct ev_str1 *e, const struct stash *s)
{
    __builtin_memcpy(e->a, s->a, sizeof(e->a));
    if (bpf_probe_read_user_str(e->s1, sizeof(e->s1), (void *)s->p[0]) < 0)
        e->s1[0] = 0;
}

// ... and its second user string too (ev_str2, ev_str3, ev_path2).
static __always_inline void fill_str2(struct ev_str2 *e, const struct stash *s)
{
    fill_str1((struct ev_str1 *)e, s);
    if (bpf_probe_read_user_str(e->s2, sizeof(e->s2), (void *)s->p[1]) < 0)
        e->s2[0] = 0;
}

// A numbers-only event of `kind`: the stashed a[] with a[0] = ret.
static __always_inline int emit_num(u32 kind, struct stash *s, long ret)
{
    struct ev_num *e = ev_reserve(kind, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s->a, sizeof(e->a));
    e->a[0] = ret;
    ev_submit(e);
    return 0;
}

// sys_exit side for kinds whose event is numbers plus up to three user strings.
static __always_inline int stash_emit(long ret)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    s.a[0] = ret;
    if (s.shape == SHAPE_NUM) {
        return emit_num(s.kind, &s, ret);
    } else if (s.shape == SHAPE_STR1) {
        struct ev_str1 *e = ev_reserve(s.kind, sizeof(*e));
        if (!e)
            return 0;
        fill_str1(e, &s);
        ev_submit(e);
    } else if (s.shape == SHAPE_STR2) {
        struct ev_str2 *e = ev_reserve(s.kind, sizeof(*e));
        if (!e)
            return 0;
        fill_str2(e, &s);
        ev_submit(e);
    } else {
        struct ev_str3 *e = ev_reserve(s.kind, sizeof(*e));
        if (!e)
            return 0;
        fill_str2((struct ev_str2 *)e, &s);
        if (bpf_probe_read_user_str(e->s3, sizeof(e->s3), (void *)s.p[2]) < 0)
            e->s3[0] = 0;
        ev_submit(e);
    }
    return 0;
}
