// The ia32 ABI (int $0x80, or a 32-bit process): syscalls:sys_enter_* / sys_exit_*
// never fire for it, raw_syscalls do, with the i386 syscall number. A syscall
// is ia32 when TS_COMPAT is set in the task's thread_info status (offsets from
// BTF, see services/probe/loader.py). Arguments come from pt_regs: bx, cx, dx,
// si, di, bp. Each call of interest is stashed and emitted exactly like its
// 64-bit twin (same kinds, same layouts), so rules see no difference.
// Covered: open, openat, creat, openat2, execve, execveat, ptrace, set*uid/set*gid
// (16- and 32-bit ids), mount, init_module, finit_module, bpf, unshare, setns, chmod,
// fchmodat, fchmod, chown/lchown/fchown (16-bit ids) and chown32/lchown32/fchown32,
// fchownat, truncate, ftruncate, truncate64, ftruncate64 (64-bit length in two
// registers), unlink, unlinkat, memfd_create, chdir, fchdir, kill, tgkill, rename,
// renameat, renameat2, link, linkat, symlink, symlinkat, mkdir, mkdirat, mprotect and
// mmap2 (W+X), userfaultfd; socket, bind, connect, listen, accept4, and socketcall's
// socket, bind, connect, listen, accept and accept4 (sockets are remembered for dup
// and flows as in 64-bit calls); dup, dup2, dup3. The exit sides are the 64-bit
// programs' own helpers (path_exit, connect_exit, socket_exit, ... taking `ret`).
// needs: file.bpf.c kernel.bpf.c net.bpf.c priv.bpf.c process.bpf.c
#if HAVE_KOFF

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
#define I32_LINK 9
#define I32_MPROTECT 125
#define I32_MMAP2 192
#define I32_USERFAULTFD 374
#define I32_MKDIR 39
#define I32_MKDIRAT 296
#define I32_RENAME 38
#define I32_SYMLINK 83
#define I32_RENAMEAT 302
#define I32_LINKAT 303
#define I32_SYMLINKAT 304
#define I32_RENAMEAT2 353
#define I32_FCHMOD 94
#define I32_LCHOWN16 16
#define I32_FCHOWN16 95
#define I32_CHOWN16 182
#define I32_LCHOWN 198
#define I32_FCHOWN 207
#define I32_CHOWN 212
#define I32_FCHOWNAT 298
#define I32_TRUNCATE 92
#define I32_FTRUNCATE 93
#define I32_TRUNCATE64 193
#define I32_FTRUNCATE64 194
#define I32_SOCKET 359
#define I32_BIND 361
#define I32_LISTEN 363
#define I32_ACCEPT4 364
#define I32_DUP 41
#define I32_DUP2 63
#define I32_DUP3 330
// socketcall's call numbers (linux/net.h)
#define SYS_SOCKET_ 1
#define SYS_BIND_ 2
#define SYS_CONNECT_ 3
#define SYS_LISTEN_ 4
#define SYS_ACCEPT_ 5
#define SYS_ACCEPT4_ 18
#define AT_SYMLINK_NOFOLLOW_ 0x100

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
    case I32_LINK: case I32_RENAME: case I32_SYMLINK: case I32_RENAMEAT: case I32_LINKAT: case I32_SYMLINKAT:
    case I32_RENAMEAT2: case I32_MKDIR: case I32_MKDIRAT: case I32_MPROTECT: case I32_MMAP2: case I32_USERFAULTFD:
    case I32_FCHMOD: case I32_LCHOWN16: case I32_FCHOWN16: case I32_CHOWN16: case I32_LCHOWN: case I32_FCHOWN:
    case I32_CHOWN: case I32_FCHOWNAT: case I32_TRUNCATE: case I32_FTRUNCATE: case I32_TRUNCATE64:
    case I32_FTRUNCATE64: case I32_SOCKET: case I32_BIND: case I32_LISTEN: case I32_ACCEPT4: case I32_DUP:
    case I32_DUP2: case I32_DUP3:
        return 1;
    }
    return 0;
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

// A 16-bit owner of chown16/lchown16/fchown16: the kernel widens 0xffff ("unchanged")
// to (uid_t)-1, which is what the 64-bit calls' events carry.
static __always_inline s64 own16(u64 v)
{
    v &= 0xffff;
    return v == 0xffff ? 0xffffffffLL : (s64)v;
}

// A 64-bit length passed in two registers (truncate64, ftruncate64): low word first.
static __always_inline s64 len64(u64 lo, u64 hi)
{
    return (s64)((u32)lo | ((u64)(u32)hi << 32));
}

#define P(x) ((const void *)(u64)(u32)(x))

// Set at the first ia32 call of interest on the node and never cleared: user space
// (services/probe/ia32_exit.py) polls it and then attaches i32_sys_exit below.
BPF_ARRAY(i32_seen, u8, 1);

// The exit side is lazy: a program on raw sys_exit runs on every syscall of the node
// (~60 ns each here, a tenth of a busy web server's throughput), so i32_sys_exit is
// loaded but attached only once an ia32 call of interest has been seen. Until user
// space has attached it and set i32_exit_live, sys_enter tail-calls it at once
// (i32_synth marks the thread) and the event goes out with the result unknown
// (RET_UNKNOWN; dup2/dup3 with newfd, which is their result on success). exec is
// reported by sched_process_exec anyway; chdir, fchdir and accept need their result
// and are not reported then (their stash is dropped: a native exit must never take it).
BPF_ARRAY(i32_exit_live, u8, 1);
BPF_PROG_ARRAY(i32_exit_prog, 1);
// An ia32 execve's environment is scanned by its own program (i32_env_scan below), tail-called
// from sys_enter: its loop would not fit in sys_enter's verifier budget.
BPF_PROG_ARRAY(i32_env_prog, 1);
BPF_TABLE("lru_hash", u32, u8, i32_synth, 1024);

RAW_TRACEPOINT_PROBE(sys_enter)
{
    long nr = ctx->args[1];
    if (!i32_wanted(nr) || !task_in_ia32())
        return 0;
    u32 zero = 0;
    u8 *seen = i32_seen.lookup(&zero);
    if (seen && !*seen)
        *seen = 1;
    struct pt_regs r = {};
    bpf_probe_read_kernel(&r, sizeof(r), (void *)ctx->args[0]);
    u64 a0 = (u32)r.bx, a1 = (u32)r.cx, a2 = (u32)r.dx, a3 = (u32)r.si;
    // each case only sets arguments: one call of each helper below keeps the program small
    int pk = 0, sk = 0, ek = 0, nk = 0;
    s64 fdk = -1;  // the fd forms' fd (fchmod, fchown16/32, ftruncate(64)): named at exit (fd_exit)
    u32 kind = 0, shape = SHAPE_NUM, dfl = 0;
    u8 cls = CLS_READ;
    s64 v1 = 0, v2 = 0, v3 = 0, v4 = 0, v5 = 0, dfd = AT_FDCWD_;
    const void *p0 = 0, *p1 = 0, *p2 = 0;
    switch (nr) {
    case I32_OPEN:
        pk = 1; kind = K_OPEN; cls = open_class(a1); p0 = P(a0); v1 = a1; v2 = (u16)a2; v3 = AT_FDCWD_; dfl = a1; dfd = AT_FDCWD_;
        break;
    case I32_CREAT:
        pk = 1; kind = K_OPEN; cls = CLS_WRITE | CLS_CREATE; p0 = P(a0); v1 = 01101; v2 = (u16)a1; v3 = AT_FDCWD_; dfl = 01101; dfd = AT_FDCWD_;
        break;
    case I32_OPENAT:
        pk = 1; kind = K_OPEN; cls = open_class(a2); p0 = P(a1); v1 = a2; v2 = (u16)a3; v3 = (s32)a0; dfl = a2; dfd = (s32)a0;
        break;
    case I32_OPENAT2: {
        struct { u64 flags; u64 mode; } how = {};
        bpf_probe_read_user(&how, sizeof(how), P(a2));
        pk = 1; kind = K_OPEN; cls = open_class(how.flags); p0 = P(a1); v1 = how.flags; v2 = how.mode; v3 = (s32)a0; dfl = how.flags; dfd = (s32)a0;
        break;
    }
    case I32_UNLINK:
        pk = 1; kind = K_UNLINK; cls = CLS_READ; p0 = P(a0); v1 = AT_FDCWD_; v2 = 0; v3 = 0; dfl = 0; dfd = AT_FDCWD_;
        break;
    case I32_UNLINKAT:
        pk = 1; kind = K_UNLINK; cls = CLS_READ; p0 = P(a1); v1 = (s32)a0; v2 = a2; v3 = 0; dfl = a2; dfd = (s32)a0;
        break;
    case I32_CHMOD:
        pk = 1; kind = K_CHMOD; cls = CLS_READ; p0 = P(a0); v1 = (u16)a1; v2 = AT_FDCWD_; v3 = 0; dfl = (u16)a1; dfd = AT_FDCWD_;
        break;
    case I32_FCHMODAT:
        pk = 1; kind = K_CHMOD; cls = CLS_READ; p0 = P(a1); v1 = (u16)a2; v2 = (s32)a0; v3 = 0; dfl = (u16)a2; dfd = (s32)a0;
        break;
    case I32_FCHMOD:
        sk = 1; kind = K_CHMOD; shape = SHAPE_NUM; v1 = (u16)a1; v2 = a0; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0; fdk = v2;
        break;
    // chown by path, as chown_path(): {uid, gid, dirfd}, dedup on the uid, the AT_* flags (v4) in a[5]
    case I32_CHOWN16:
        pk = 1; kind = K_CHOWN; cls = CLS_READ; p0 = P(a0); v1 = own16(a1); v2 = own16(a2); v3 = AT_FDCWD_; v4 = 0; dfl = v1; dfd = AT_FDCWD_;
        break;
    case I32_LCHOWN16:
        pk = 1; kind = K_CHOWN; cls = CLS_READ; p0 = P(a0); v1 = own16(a1); v2 = own16(a2); v3 = AT_FDCWD_; v4 = AT_SYMLINK_NOFOLLOW_; dfl = v1; dfd = AT_FDCWD_;
        break;
    case I32_CHOWN:
        pk = 1; kind = K_CHOWN; cls = CLS_READ; p0 = P(a0); v1 = a1; v2 = a2; v3 = AT_FDCWD_; v4 = 0; dfl = a1; dfd = AT_FDCWD_;
        break;
    case I32_LCHOWN:
        pk = 1; kind = K_CHOWN; cls = CLS_READ; p0 = P(a0); v1 = a1; v2 = a2; v3 = AT_FDCWD_; v4 = AT_SYMLINK_NOFOLLOW_; dfl = a1; dfd = AT_FDCWD_;
        break;
    case I32_FCHOWNAT:
        pk = 1; kind = K_CHOWN; cls = CLS_READ; p0 = P(a1); v1 = a2; v2 = a3; v3 = (s32)a0; v4 = (s32)r.di; dfl = a2; dfd = (s32)a0;
        break;
    case I32_FCHOWN16:
        sk = 1; kind = K_CHOWN; shape = SHAPE_NUM; v1 = own16(a1); v2 = own16(a2); v3 = a0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0; fdk = v3;
        break;
    case I32_FCHOWN:
        sk = 1; kind = K_CHOWN; shape = SHAPE_NUM; v1 = a1; v2 = a2; v3 = a0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0; fdk = v3;
        break;
    // truncate by path: {length, dirfd}, dedup on the length; by fd: {length, fd}
    case I32_TRUNCATE:
        pk = 1; kind = K_TRUNCATE; cls = CLS_READ; p0 = P(a0); v1 = (s32)a1; v2 = AT_FDCWD_; v3 = 0; dfl = (s32)a1; dfd = AT_FDCWD_;
        break;
    case I32_TRUNCATE64:
        pk = 1; kind = K_TRUNCATE; cls = CLS_READ; p0 = P(a0); v1 = len64(a1, a2); v2 = AT_FDCWD_; v3 = 0; dfl = (u32)a1; dfd = AT_FDCWD_;
        break;
    case I32_FTRUNCATE:
        sk = 1; kind = K_TRUNCATE; shape = SHAPE_NUM; v1 = (s32)a1; v2 = a0; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0; fdk = v2;
        break;
    case I32_FTRUNCATE64:
        sk = 1; kind = K_TRUNCATE; shape = SHAPE_NUM; v1 = len64(a1, a2); v2 = a0; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0; fdk = v2;
        break;
    case I32_MPROTECT:  // as wx_stash(): W+X only
        if ((a2 & PROT_WX_) == PROT_WX_)
            sk = 1; kind = K_MPROTECT; shape = SHAPE_NUM; v1 = a0; v2 = a1; v3 = a2 | ((u64)WX_MPROTECT << 32); v4 = 0; v5 = -1; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_MMAP2:
        if ((a2 & PROT_WX_) == PROT_WX_)
            sk = 1; kind = K_MPROTECT; shape = SHAPE_NUM; v1 = a0; v2 = a1; v3 = a2 | ((u64)WX_MMAP << 32); v4 = a3; v5 = (s32)r.di; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_USERFAULTFD:
        sk = 1; kind = K_USERFAULTFD; shape = SHAPE_NUM; v1 = (s32)a0; v2 = 0; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_MKDIR:
        pk = 1; kind = K_MKDIR; cls = CLS_READ; p0 = P(a0); v1 = (u16)a1; v2 = AT_FDCWD_; v3 = 0; dfl = (u16)a1; dfd = AT_FDCWD_;
        break;
    case I32_MKDIRAT:
        pk = 1; kind = K_MKDIR; cls = CLS_READ; p0 = P(a1); v1 = (u16)a2; v2 = (s32)a0; v3 = 0; dfl = (u16)a2; dfd = (s32)a0;
        break;
    case I32_EXECVE:
        ek = 1; p0 = P(a0); p1 = P(a1); dfd = AT_FDCWD_;
        break;
    case I32_EXECVEAT:
        ek = 1; p0 = P(a1); p1 = P(a2); dfd = (s32)a0;
        break;
    // sockets, as net_stash() in bpf/net.bpf.c: {fd or family, ...} and up to two user pointers
    case I32_SOCKET:
        nk = 1; kind = K_SOCKET; v1 = (s32)a0; v2 = (s32)a1; v3 = (s32)a2; p0 = 0; p1 = 0;
        break;
    case I32_BIND:
        nk = 1; kind = STASH_BIND; v1 = (s32)a0; v2 = (s32)a2; v3 = 0; p0 = P(a1); p1 = 0;
        break;
    case I32_CONNECT:
        nk = 1; kind = K_CONNECT; v1 = (s32)a0; v2 = (s32)a2; v3 = 0; p0 = P(a1); p1 = 0;
        break;
    case I32_LISTEN:
        nk = 1; kind = K_LISTEN; v1 = (s32)a0; v2 = (s32)a1; v3 = 0; p0 = 0; p1 = 0;
        break;
    case I32_ACCEPT4:
        nk = 1; kind = K_ACCEPT; v1 = (s32)a0; v2 = 0; v3 = 0; p0 = P(a1); p1 = P(a2);
        break;
    case I32_DUP:
        nk = 1; kind = K_DUP; v1 = a0; v2 = -1; v3 = 0; p0 = 0; p1 = 0;
        break;
    case I32_DUP2:
        nk = 1; kind = K_DUP; v1 = a0; v2 = a1; v3 = 1; p0 = 0; p1 = 0;
        break;
    case I32_DUP3:
        nk = 1; kind = K_DUP; v1 = a0; v2 = a1; v3 = 2; p0 = 0; p1 = 0;
        break;
    case I32_SOCKETCALL: {
        if (a0 < SYS_SOCKET_ || (a0 > SYS_ACCEPT_ && a0 != SYS_ACCEPT4_))  // send, recv, ...: nothing read
            break;
        u32 sa[3] = {};  // the call's first three arguments
        bpf_probe_read_user(sa, sizeof(sa), P(a1));
        nk = 1; v1 = (s32)sa[0]; v2 = (s32)sa[1]; v3 = 0; p0 = 0; p1 = 0;
        if (a0 == SYS_SOCKET_) {
            kind = K_SOCKET; v3 = (s32)sa[2];
        } else if (a0 == SYS_BIND_) {
            kind = STASH_BIND; v2 = (s32)sa[2]; p0 = P(sa[1]);
        } else if (a0 == SYS_CONNECT_) {
            kind = K_CONNECT; v2 = (s32)sa[2]; p0 = P(sa[1]);
        } else if (a0 == SYS_LISTEN_) {
            kind = K_LISTEN;
        } else {  // accept, accept4
            kind = K_ACCEPT; v2 = 0; p0 = P(sa[1]); p1 = P(sa[2]);
        }
        break;
    }
    case I32_PTRACE:
        sk = 1; kind = K_PTRACE; shape = SHAPE_NUM; v1 = a0; v2 = (s32)a1; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETUID16:
        sk = 1; kind = K_SETUID; shape = SHAPE_NUM; v1 = id16(a0); v2 = ID_UNCHANGED; v3 = ID_UNCHANGED; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETUID:
        sk = 1; kind = K_SETUID; shape = SHAPE_NUM; v1 = id32(a0); v2 = ID_UNCHANGED; v3 = ID_UNCHANGED; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETREUID16:
        sk = 1; kind = K_SETUID; shape = SHAPE_NUM; v1 = id16(a0); v2 = id16(a1); v3 = ID_UNCHANGED; v4 = 1; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETREUID:
        sk = 1; kind = K_SETUID; shape = SHAPE_NUM; v1 = id32(a0); v2 = id32(a1); v3 = ID_UNCHANGED; v4 = 1; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETRESUID16:
        sk = 1; kind = K_SETUID; shape = SHAPE_NUM; v1 = id16(a0); v2 = id16(a1); v3 = id16(a2); v4 = 2; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETRESUID:
        sk = 1; kind = K_SETUID; shape = SHAPE_NUM; v1 = id32(a0); v2 = id32(a1); v3 = id32(a2); v4 = 2; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETGID16:
        sk = 1; kind = K_SETGID; shape = SHAPE_NUM; v1 = id16(a0); v2 = ID_UNCHANGED; v3 = ID_UNCHANGED; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETGID:
        sk = 1; kind = K_SETGID; shape = SHAPE_NUM; v1 = id32(a0); v2 = ID_UNCHANGED; v3 = ID_UNCHANGED; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETREGID16:
        sk = 1; kind = K_SETGID; shape = SHAPE_NUM; v1 = id16(a0); v2 = id16(a1); v3 = ID_UNCHANGED; v4 = 1; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETREGID:
        sk = 1; kind = K_SETGID; shape = SHAPE_NUM; v1 = id32(a0); v2 = id32(a1); v3 = ID_UNCHANGED; v4 = 1; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETRESGID16:
        sk = 1; kind = K_SETGID; shape = SHAPE_NUM; v1 = id16(a0); v2 = id16(a1); v3 = id16(a2); v4 = 2; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETRESGID:
        sk = 1; kind = K_SETGID; shape = SHAPE_NUM; v1 = id32(a0); v2 = id32(a1); v3 = id32(a2); v4 = 2; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_MOUNT:
        sk = 1; kind = K_MOUNT; shape = SHAPE_STR3; v1 = a3; v2 = 0; v3 = 0; v4 = 0; v5 = 0; p0 = P(a0); p1 = P(a1); p2 = P(a2);
        break;
    case I32_INIT_MODULE:
        sk = 1; kind = K_MODULE; shape = SHAPE_STR1; v1 = -1; v2 = 0; v3 = 0; v4 = 0; v5 = 0; p0 = P(a2); p1 = 0; p2 = 0;
        break;
    case I32_FINIT_MODULE:
        sk = 1; kind = K_MODULE; shape = SHAPE_STR1; v1 = (s32)a0; v2 = a2; v3 = 1; v4 = 0; v5 = 0; p0 = P(a1); p1 = 0; p2 = 0;
        break;
    case I32_BPF:
        sk = 1; kind = K_BPF; shape = SHAPE_NUM; v1 = a0; v2 = -1; v3 = 0; v4 = 0; v5 = 0; p0 = P(a1); p1 = 0; p2 = 0;
        break;
    case I32_UNSHARE:
        sk = 1; kind = K_UNSHARE; shape = SHAPE_NUM; v1 = a0; v2 = 0; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_SETNS:
        sk = 1; kind = K_SETNS; shape = SHAPE_NUM; v1 = (s32)a0; v2 = a1; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_MEMFD_CREATE:
        sk = 1; kind = K_MEMFD; shape = SHAPE_STR1; v1 = a1; v2 = 0; v3 = 0; v4 = 0; v5 = 0; p0 = P(a0); p1 = 0; p2 = 0;
        break;
    // two-path kinds, as path2_put() stashes them: flags, old dirfd, new dirfd
    case I32_RENAME:
        sk = 1; kind = K_RENAME; shape = SHAPE_STR2; v1 = 0; v2 = AT_FDCWD_; v3 = AT_FDCWD_; v4 = 0; v5 = 0; p0 = P(a0); p1 = P(a1); p2 = 0;
        break;
    case I32_RENAMEAT:
        sk = 1; kind = K_RENAME; shape = SHAPE_STR2; v1 = 0; v2 = (s32)a0; v3 = (s32)a2; v4 = 0; v5 = 0; p0 = P(a1); p1 = P(a3); p2 = 0;
        break;
    case I32_RENAMEAT2:
        sk = 1; kind = K_RENAME; shape = SHAPE_STR2; v1 = (u32)r.di; v2 = (s32)a0; v3 = (s32)a2; v4 = 0; v5 = 0; p0 = P(a1); p1 = P(a3); p2 = 0;
        break;
    case I32_LINK:
        sk = 1; kind = K_LINK; shape = SHAPE_STR2; v1 = 0; v2 = AT_FDCWD_; v3 = AT_FDCWD_; v4 = 0; v5 = 0; p0 = P(a0); p1 = P(a1); p2 = 0;
        break;
    case I32_LINKAT:
        sk = 1; kind = K_LINK; shape = SHAPE_STR2; v1 = (s32)r.di; v2 = (s32)a0; v3 = (s32)a2; v4 = 0; v5 = 0; p0 = P(a1); p1 = P(a3); p2 = 0;
        break;
    case I32_SYMLINK:
        sk = 1; kind = K_SYMLINK; shape = SHAPE_STR2; v1 = 0; v2 = NO_BASE; v3 = AT_FDCWD_; v4 = 0; v5 = 0; p0 = P(a0); p1 = P(a1); p2 = 0;
        break;
    case I32_SYMLINKAT:
        sk = 1; kind = K_SYMLINK; shape = SHAPE_STR2; v1 = 0; v2 = NO_BASE; v3 = (s32)a1; v4 = 0; v5 = 0; p0 = P(a0); p1 = P(a2); p2 = 0;
        break;
    case I32_CHDIR:
        sk = 1; kind = K_CHDIR; shape = SHAPE_STR1; v1 = 0; v2 = 0; v3 = 0; v4 = 0; v5 = 0; p0 = P(a0); p1 = 0; p2 = 0;
        break;
    case I32_FCHDIR:
        sk = 1; kind = K_CHDIR; shape = SHAPE_NUM; v1 = (s32)a0; v2 = 1; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_KILL:
        if (a1 != 0 && (u32)a0 != bpf_get_current_pid_tgid() >> 32)
            sk = 1; kind = K_SIGNAL; shape = SHAPE_NUM; v1 = (s32)a0; v2 = a1; v3 = 0; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    case I32_TGKILL:
        if (a2 != 0 && (u32)a0 != bpf_get_current_pid_tgid() >> 32)
            sk = 1; kind = K_SIGNAL; shape = SHAPE_NUM; v1 = (s32)a0; v2 = a2; v3 = (s32)a1; v4 = 0; v5 = 0; p0 = 0; p1 = 0; p2 = 0;
        break;
    }
    if (fdk >= 0)  // the fd forms keep the fd's struct path, as fd_stash does
        p0 = fd_path(fdk, 0);
    if (pk) {
        path_stash_fold(kind, cls, p0, v1, v2, v3, dfl, dfd, 0);
        if (kind == K_CHOWN)
            chown_flags(v4);
    } else if (sk)
        stash_put(kind, shape, v1, v2, v3, v4, v5, p0, p1, p2);
    else if (ek)
        exec_enter_abi(p0, p1, dfd, 1);
    else if (nk)
        net_stash(kind, v1, v2, v3, p0, p1);
    if (ek) {
        i32_env_prog.call(ctx, 0);
        if (!skip(K_EXECENV))  // reached only if the tail call failed: the scan is lost, counted
            count_lost(K_EXECENV);
        return 0;
    }
    u8 *live = i32_exit_live.lookup(&zero);
    u64 id = bpf_get_current_pid_tgid();
    struct stash *st = stash.lookup(&id);
    if ((live && *live) || !st)
        return 0;
    u32 stashed = st->kind;  // (read from the map: one value for the verifier, whatever the case above)
    u32 tid = id;
    u8 one = 1;
    i32_synth.update(&tid, &one);
    i32_exit_prog.call(ctx, 0);
    // reached only if the tail call failed (no exit program loaded): the call is lost, counted,
    // and its stash must not be taken by the thread's next native exit
    i32_synth.delete(&tid);
    stash.delete(&id);
    count_lost(stashed);
    return 0;
}

// socketcall's exit: the sub-call is the kind its sys_enter stashed.
static __always_inline int socketcall_exit(long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    struct stash *s = stash.lookup(&id);
    if (!s)
        return 0;
    switch (s->kind) {
    case K_SOCKET:
        return socket_exit(ret);
    case STASH_BIND:
        return bind_exit(ret);
    case K_CONNECT:
        return connect_exit(ret);
    case K_LISTEN:
        return listen_exit(ret);
    case K_ACCEPT:
        return accept_exit(ret);
    }
    return 0;
}

// The environment of an ia32 execve (envp in edx) or execveat (in esi), as native execs'.
// Not a RAW_TRACEPOINT_PROBE: only ever tail-called (user space fills i32_env_prog).
int i32_env_scan(struct bpf_raw_tracepoint_args *ctx)
{
    struct pt_regs r = {};
    bpf_probe_read_kernel(&r, sizeof(r), (void *)ctx->args[0]);
    exec_env_scan_abi(P(ctx->args[1] == I32_EXECVE ? r.dx : r.si), 1);
    return 0;
}

// Not a RAW_TRACEPOINT_PROBE: bcc would attach it at load (see i32_exit_live above).
int i32_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    long nr = -1;
    bpf_probe_read_kernel(&nr, sizeof(nr), &((struct pt_regs *)ctx->args[0])->orig_ax);
    if (!i32_wanted(nr) || !task_in_ia32())
        return 0;
    long ret = ctx->args[1];
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    if (i32_synth.lookup(&tid)) {  // tail-called from sys_enter: the call has not run yet
        i32_synth.delete(&tid);
        struct stash *st = stash.lookup(&id);
        if (!st)
            return 0;
        switch (nr) {
        case I32_EXECVE: case I32_EXECVEAT:
            return 0;
        case I32_CHDIR: case I32_FCHDIR: case I32_ACCEPT4:  // their events need the result
            stash.delete(&id);  // not left for the thread's next native exit to take
            return 0;
        case I32_SOCKETCALL:
            if (st->kind == K_ACCEPT) {
                stash.delete(&id);
                return 0;
            }
            ret = RET_UNKNOWN;
            break;
        case I32_DUP2: case I32_DUP3:
            ret = st->a[2];
            break;
        default:
            ret = RET_UNKNOWN;
        }
    }
    switch (nr) {
    case I32_OPEN: case I32_CREAT: case I32_OPENAT: case I32_OPENAT2: case I32_UNLINK: case I32_UNLINKAT:
    case I32_CHMOD: case I32_FCHMODAT: case I32_MKDIR: case I32_MKDIRAT:
        return path_exit(ret);
    case I32_EXECVE: case I32_EXECVEAT:
        if (ret < 0)
            exec_emit((u32)bpf_get_current_pid_tgid(), ret);
        return 0;
    case I32_CONNECT:
        return connect_exit(ret);
    case I32_SOCKETCALL:
        return socketcall_exit(ret);
    case I32_SOCKET:
        return socket_exit(ret);
    case I32_BIND:
        return bind_exit(ret);
    case I32_LISTEN:
        return listen_exit(ret);
    case I32_ACCEPT4:
        return accept_exit(ret);
    case I32_DUP: case I32_DUP2: case I32_DUP3:
        return dup_exit(ret);
    case I32_FCHMOD: case I32_FCHOWN16: case I32_FCHOWN: case I32_FTRUNCATE: case I32_FTRUNCATE64:
    case I32_FCHOWNAT:  // with AT_EMPTY_PATH and "", an fd form; by path, as chown below
        if (nr != I32_FCHOWNAT || empty_path_is_fd(K_CHOWN, 5))
            return fd_exit(ret);
        break;
    case I32_LINK: case I32_RENAME: case I32_SYMLINK: case I32_RENAMEAT: case I32_LINKAT: case I32_SYMLINKAT:
    case I32_RENAMEAT2:
        return path2_exit(ret);
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
    return stash_emit(ret);  // chown and truncate by path and the rest: as their 64-bit exits
}
#endif
