// Network: connect, accept, listen, raw/packet sockets, and dup of sockets.
//
// Every socket fd (from socket, connect, accept) is remembered per tgid in
// sock_fds so that dup2/dup3 can say "oldfd is a socket": a shell whose
// stdin/stdout become a socket is a reverse shell. bind() adds the local
// address, which listen and accept report. An entry names the socket it was made
// for (fd_ident) and counts only while that socket is still at its fd: no
// program runs on close(), which every process of the node calls all the time
// (without kernel BTF, where fds cannot be checked, close() is traced instead).
//
// Connects and accepts of AF_INET/AF_INET6 are also aggregated per cgroup
// in the `flows` map (always, whatever kinds are on), which
// services/probe/flows.py reads periodically.
//
// a[]: connect {ret, fd, addrlen, socket type}; accept {ret, listen_fd, type, lport, lfamily};
//      listen {ret, fd, backlog, lport, lfamily}; socket {ret, family, type, protocol};
//      dup {ret, oldfd, newfd, is_socket, syscall (0 dup, 1 dup2, 2 dup3), socket origin (SOCK_*)}.
// needs: file.bpf.c

#define AF_PACKET_ 17
#define SOCK_RAW_ 3

struct fd_key { u32 tgid; u32 fd; };
#define SOCK_MADE 1        // how the fd became a socket: socket(), accept(), connect()
#define SOCK_ACCEPTED 2
#define SOCK_CONNECTED 3
struct sock_info {
    u16 family;
    u16 type;
    u16 port;      // local port from bind(), host order
    u16 origin;    // SOCK_*: the last of socket/accept/connect seen for it
    u8 addr[16];   // local address from bind()
    u64 ident;     // fd_ident() of the fd when remembered
};
BPF_TABLE("lru_hash", struct fd_key, struct sock_info, sock_fds, 65536);

// Tracking sockets does not depend on the kinds enabled, only on exclusion.
static __always_inline int excluded_now(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    return excluded.lookup(&tgid) ? 1 : 0;
}

static __always_inline void net_stash(u32 kind, s64 a1, s64 a2, s64 a3, const void *p0, const void *p1)
{
    if (excluded_now())
        return;
    u64 id = bpf_get_current_pid_tgid();
    struct stash s = {};
    s.kind = kind;
    s.a[1] = a1; s.a[2] = a2; s.a[3] = a3;
    s.p[0] = (u64)p0; s.p[1] = (u64)p1;
    if (stash.update(&id, &s) < 0)
        count_lost(kind);
}

// What sock_info.ident holds for the current task's `fd`: its socket inode's number (sockfs
// numbers every socket anew; a struct file is reused as soon as it is freed), 1 for an fd
// that is no socket, 0 without BTF (no check).
static __always_inline u64 fd_ident(u32 fd)
{
#if HAVE_KOFF
    char *file = fd_file(fd);
    char *inode = file ? kptr(file + OFF_FILE_INODE) : 0;
    u16 mode = 0;
    u64 ino = 0;
    if (!inode || bpf_probe_read_kernel(&mode, sizeof(mode), inode + OFF_INODE_MODE) < 0 ||
        (mode & 0170000) != 0140000 ||  // S_IFSOCK
        bpf_probe_read_kernel(&ino, sizeof(ino), inode + OFF_INODE_INO) < 0 || ino <= 1)
        return 1;
    return ino;
#else
    return 0;
#endif
}

// `si`, sock_fds' entry `k` (or NULL), if it still describes the socket the current task has at
// that fd (a child shares its parent's), whose fd_ident() is `ident`; a stale entry of the
// current process (its fd closed and reused since) is deleted.
static __always_inline struct sock_info *sock_current(struct fd_key *k, struct sock_info *si, u64 ident)
{
    if (!si || si->ident == ident)
        return si;
    if (k->tgid == bpf_get_current_pid_tgid() >> 32)
        sock_fds.delete(k);
    return 0;
}

// sock_fds' current entry for `fd` of process `tgid` (the fd's ident read only when there is one).
static __always_inline struct sock_info *sock_lookup(u32 tgid, u32 fd)
{
    struct fd_key k = {tgid, fd};
    struct sock_info *si = sock_fds.lookup(&k);
    return si ? sock_current(&k, si, fd_ident(fd)) : 0;
}

// Remember `fd` as a socket (no entry if it is none: a connect() on a file fails, and leaves it a file).
static __always_inline void remember_fd(u32 fd, u16 family, u16 type, u16 origin)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 ident = fd_ident(fd);
    if (ident == 1)
        return;
    struct fd_key k = {tgid, fd};
    struct sock_info *old = sock_current(&k, sock_fds.lookup(&k), ident);
    if (old) {
        old->origin = origin;
        return;
    }
    struct sock_info v = {};
    v.family = family;
    v.type = type;
    v.origin = origin;
    v.ident = ident;
    sock_fds.update(&k, &v);
}

// Flows. The key has no ephemeral port (the peer's on accept; ours on
// connect unless bind() chose it), so N connections to one service from one
// cgroup are one flow with count N. A plain hash, not LRU: when it is full a
// new flow is counted in flows_full, never evicts another's counts silently;
// user space deletes idle flows.
#ifndef FLOWS_MAX
#define FLOWS_MAX 16384
#endif
#define EISCONN_ 106
#define EALREADY_ 114
#define EINPROGRESS_ 115

struct flow_key {
    u64 cgroup_id;
    u8 direction;   // 0 connect, 1 accept
    u8 type;        // socket type: 1 SOCK_STREAM (tcp), 2 SOCK_DGRAM (udp), 0 unknown
    u16 family;
    u16 rport;      // remote port, host order (connect; 0 on accept)
    u16 lport;      // local port: the listener's (accept) or from bind() (connect), else 0
    u8 raddr[16];   // remote address (IPv4 in the first 4 bytes), zero if unknown
};
struct flow_val {
    u64 count;      // connect attempts (-EINPROGRESS included) or accepted connections
    u64 failed;     // connects that returned an error
    u64 first_seen; // bpf_ktime_get_boot_ns()
    u64 last_seen;
    u8 laddr[16];   // local address from bind()/listen(), where known
};
BPF_HASH(flows, struct flow_key, struct flow_val, FLOWS_MAX);
BPF_ARRAY(flows_full, u64, 1);  // new flows dropped: `flows` was full

// Callers run only with a stash, so excluded pids (net_stash) make no flows.
static __always_inline void flow_add(struct flow_key *k, const u8 *laddr, int failed)
{
    u64 now = bpf_ktime_get_boot_ns();
    k->cgroup_id = bpf_get_current_cgroup_id();
    struct flow_val *v = flows.lookup(k);
    if (!v) {
        struct flow_val nv = {};
        nv.first_seen = now;
        nv.last_seen = now;
        __builtin_memcpy(nv.laddr, laddr, 16);
        flows.insert(k, &nv);  // BPF_NOEXIST: a racing CPU's counts survive
        v = flows.lookup(k);
        if (!v) {
            u32 zero = 0;
            u64 *full = flows_full.lookup(&zero);
            if (full)
                __sync_fetch_and_add(full, 1);
            return;
        }
    }
    __sync_fetch_and_add(&v->count, 1);
    if (failed)
        __sync_fetch_and_add(&v->failed, 1);
    v->last_seen = now;
}

// Read the address (not the port) of a user sockaddr_in/_in6 into k->raddr.
static __always_inline void flow_raddr(struct flow_key *k, const void *uaddr, u16 family)
{
    if (family == AF_INET6_)
        bpf_probe_read_user(k->raddr, 16, (const u8 *)uaddr + 8);  // sin6_addr
    else
        bpf_probe_read_user(k->raddr, 4, (const u8 *)uaddr + 4);   // sin_addr
}

// Copy a user sockaddr of length `len` (at most 110 bytes).
static __always_inline void read_sa(u8 *dst, const void *uaddr, s64 len)
{
    if (!uaddr || len <= 0)
        return;
    // Constant sizes keep the verifier simple: sockaddr_in, _in6, _un.
    if (len <= 16)
        bpf_probe_read_user(dst, 16, uaddr);
    else if (len <= 28)
        bpf_probe_read_user(dst, 28, uaddr);
    else
        bpf_probe_read_user(dst, 110, uaddr);
}

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
    net_stash(K_SOCKET, args->family, args->type, args->protocol, 0, 0);
    return 0;
}

// The exit sides below take the syscall's return value, so the ia32 programs
// (bpf/syscalls_ia32.bpf.c) share them with the 64-bit tracepoints.
static __always_inline int socket_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    if (ret >= 0)
        remember_fd(ret, s.a[1], s.a[2], SOCK_MADE);
    // Only raw and packet sockets are events: everything else shows up as connect/accept.
    if ((s.a[1] != AF_PACKET_ && (s.a[2] & 0xf) != SOCK_RAW_) || skip(K_SOCKET))
        return 0;
    return emit_num(K_SOCKET, &s, ret);
}

SYS_EXIT(socket, socket_exit)

#define STASH_BIND 0  // bind() makes no event: its stash has no kind of its own
TRACEPOINT_PROBE(syscalls, sys_enter_bind)
{
    net_stash(STASH_BIND, args->fd, args->addrlen, 0, args->umyaddr, 0);
    return 0;
}

static __always_inline int bind_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s) || ret != 0)
        return 0;
    struct { u16 family; u16 port; u32 addr4; u8 addr6[16]; } sa = {};
    bpf_probe_read_user(&sa, sizeof(sa), (void *)s.p[0]);
    struct sock_info v = {};
    v.family = sa.family;
    v.port = (sa.port >> 8) | ((sa.port & 0xff) << 8);
    if (sa.family == AF_INET_)
        __builtin_memcpy(v.addr, &sa.addr4, 4);
    else if (sa.family == AF_INET6_)
        __builtin_memcpy(v.addr, sa.addr6, 16);  // sin6_addr follows sin6_flowinfo: u32 at 4, addr at 8
    struct fd_key k = {bpf_get_current_pid_tgid() >> 32, (u32)s.a[1]};
    v.ident = fd_ident(k.fd);
    struct sock_info *old = sock_current(&k, sock_fds.lookup(&k), v.ident);
    if (old)
        v.type = old->type;
    sock_fds.update(&k, &v);
    return 0;
}

SYS_EXIT(bind, bind_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    net_stash(K_CONNECT, args->fd, args->addrlen, 0, args->uservaddr, 0);
    return 0;
}

static __always_inline int connect_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s))
        return 0;
    u16 family = 0;
    bpf_probe_read_user(&family, sizeof(family), (void *)s.p[0]);
    struct sock_info *si = sock_lookup(bpf_get_current_pid_tgid() >> 32, (u32)s.a[1]);
    s64 type = si ? si->type : 0;  // 0: socket made before the probe started
    // -EALREADY/-EISCONN: a non-blocking connect asked again, not a new attempt
    if ((family == AF_INET_ || family == AF_INET6_) && ret != -EALREADY_ && ret != -EISCONN_) {
        struct flow_key fk = {};
        u8 laddr[16] = {};
        u16 port = 0;
        fk.type = type & 0xf;
        fk.family = family;
        bpf_probe_read_user(&port, sizeof(port), (const u8 *)s.p[0] + 2);
        fk.rport = (port >> 8) | ((port & 0xff) << 8);
        flow_raddr(&fk, (void *)s.p[0], family);
        if (si && si->family == family) {  // bound before connect
            fk.lport = si->port;
            __builtin_memcpy(laddr, si->addr, 16);
        }
        flow_add(&fk, laddr, ret < 0 && ret != -EINPROGRESS_ && ret != RET_UNKNOWN);
    }
    remember_fd(s.a[1], family, 0, SOCK_CONNECTED);
    if (skip(K_CONNECT))
        return 0;
    struct ev_sock *e = ev_reserve(K_CONNECT, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = ret;
    e->a[3] = type;
    __builtin_memset(e->sa, 0, sizeof(e->sa));
    __builtin_memset(e->la, 0, sizeof(e->la));
    read_sa(e->sa, (void *)s.p[0], s.a[2]);
    ev_submit(e);
    return 0;
}

SYS_EXIT(connect, connect_exit)

static __always_inline int accept_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s) || ret < 0)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct sock_info *l = sock_lookup(tgid, (u32)s.a[1]);
    struct sock_info li = {};
    if (l)
        __builtin_memcpy(&li, l, sizeof(li));
    remember_fd(ret, li.family, li.type, SOCK_ACCEPTED);
    int alen = 0;
    if (s.p[1])
        bpf_probe_read_user(&alen, sizeof(alen), (void *)s.p[1]);
    // The flow: the peer's address if the caller asked for it, the listener's port.
    struct flow_key fk = {};
    if (s.p[0] && alen >= 16)
        bpf_probe_read_user(&fk.family, sizeof(fk.family), (void *)s.p[0]);
    else
        fk.family = li.family;
    if (fk.family == AF_INET_ || fk.family == AF_INET6_) {
        fk.direction = 1;
        fk.type = li.type & 0xf;
        fk.lport = li.port;
        if (s.p[0] && alen >= 16)
            flow_raddr(&fk, (void *)s.p[0], fk.family);
        flow_add(&fk, li.addr, 0);
    }
    if (skip(K_ACCEPT))
        return 0;
    struct ev_sock *e = ev_reserve(K_ACCEPT, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = ret;
    e->a[2] = li.type;
    e->a[3] = li.port;
    e->a[4] = li.family;
    __builtin_memcpy(e->la, li.addr, sizeof(e->la));
    __builtin_memset(e->sa, 0, sizeof(e->sa));
    read_sa(e->sa, (void *)s.p[0], alen);
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
    net_stash(K_ACCEPT, args->fd, 0, 0, args->upeer_sockaddr, args->upeer_addrlen);
    return 0;
}

SYS_EXIT(accept, accept_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
    net_stash(K_ACCEPT, args->fd, 0, 0, args->upeer_sockaddr, args->upeer_addrlen);
    return 0;
}

SYS_EXIT(accept4, accept_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_listen)
{
    net_stash(K_LISTEN, args->fd, args->backlog, 0, 0, 0);
    return 0;
}

// The listening address, as the kernel chose it (port 0 in bind() means
// "any"): sock:inet_sock_set_state fires inside listen() in the caller's
// context when the socket enters TCP_LISTEN.
struct listen_addr { u16 family; u16 port; u8 addr[16]; };
BPF_HASH(listen_addrs, u32, struct listen_addr, 1024);  // tid -> address, during listen()

#if HAVE_TP(sock, inet_sock_set_state)
#define TCP_LISTEN_ 10
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->newstate != TCP_LISTEN_)
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    struct listen_addr la = {};
    la.family = args->family;
    la.port = args->sport;
    if (la.family == AF_INET6_)
        __builtin_memcpy(la.addr, args->saddr_v6, 16);
    else
        __builtin_memcpy(la.addr, args->saddr, 4);
    listen_addrs.update(&tid, &la);
    return 0;
}
#endif

static __always_inline int listen_exit(long ret)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct listen_addr *la = listen_addrs.lookup(&tid);
    struct fd_key k = {bpf_get_current_pid_tgid() >> 32, 0};
    struct stash s;
    int have = stash_take(&s);
    if (!have) {
        listen_addrs.delete(&tid);
        return 0;
    }
    k.fd = (u32)s.a[1];
    struct sock_info *l = sock_lookup(k.tgid, k.fd);
    if (l && la) {  // remember the real local address for accept()
        l->family = la->family;
        l->port = la->port;
        __builtin_memcpy(l->addr, la->addr, 16);
    }
    if (skip(K_LISTEN)) {
        listen_addrs.delete(&tid);
        return 0;
    }
    struct ev_sock *e = ev_reserve(K_LISTEN, sizeof(*e));
    if (!e) {
        listen_addrs.delete(&tid);
        return 0;
    }
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = ret;
    __builtin_memset(e->sa, 0, sizeof(e->sa));
    __builtin_memset(e->la, 0, sizeof(e->la));
    if (la) {
        e->a[3] = la->port;
        e->a[4] = la->family;
        __builtin_memcpy(e->la, la->addr, sizeof(e->la));
    } else if (l) {
        e->a[3] = l->port;
        e->a[4] = l->family;
        __builtin_memcpy(e->la, l->addr, sizeof(e->la));
    }
    ev_submit(e);
    listen_addrs.delete(&tid);
    return 0;
}

SYS_EXIT(listen, listen_exit)

// dup family: the new fd inherits "socket" from oldfd (looked up in this
// process, then in its parent: nc -e forks before it dups).
static __always_inline int dup_exit(long ret)
{
    struct stash s;
    if (!stash_take(&s) || ret < 0)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u32 newfd = ret;
    struct sock_info *si = sock_lookup(tgid, (u32)s.a[1]);
    if (!si) {
        u32 *pp = parents.lookup(&tgid);
        if (pp)
            si = sock_lookup(*pp, (u32)s.a[1]);
    }
    struct fd_key nk = {tgid, newfd};
    int is_sock = 0;
    u16 origin = 0, copy_family = 0;
    if (si) {
        struct sock_info copy = {};
        __builtin_memcpy(&copy, si, sizeof(copy));
        sock_fds.update(&nk, &copy);
        is_sock = 1;
        origin = copy.origin;
    } else if (newfd <= 2 && (copy_family = fd_inet_family(s.a[1]))) {  // a socket made unseen
        struct sock_info copy = {};
        copy.family = copy_family;
        copy.ident = fd_ident(s.a[1]);  // oldfd's: an ia32 dup2 reported from its entry has not happened yet
        sock_fds.update(&nk, &copy);
        is_sock = 1;
    } else {
        sock_fds.delete(&nk);
    }
    if ((!is_sock && newfd > 2) || skip(K_DUP))
        return 0;
    struct ev_num *e = ev_reserve(K_DUP, sizeof(*e));
    if (!e)
        return 0;
    __builtin_memcpy(e->a, s.a, sizeof(e->a));
    e->a[0] = ret;
    e->a[2] = newfd;
    e->a[4] = s.a[3];  // syscall code, stashed in a[3]
    e->a[3] = is_sock;
    e->a[5] = origin;
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup)
{
    net_stash(K_DUP, args->fildes, -1, 0, 0, 0);
    return 0;
}

SYS_EXIT(dup, dup_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_dup2)
{
    net_stash(K_DUP, args->oldfd, args->newfd, 1, 0, 0);
    return 0;
}

SYS_EXIT(dup2, dup_exit)

TRACEPOINT_PROBE(syscalls, sys_enter_dup3)
{
    net_stash(K_DUP, args->oldfd, args->newfd, 2, 0, 0);
    return 0;
}

SYS_EXIT(dup3, dup_exit)

#if !HAVE_KOFF
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    struct fd_key k = {bpf_get_current_pid_tgid() >> 32, args->fd};
    if (sock_fds.lookup(&k))  // a lookup is much cheaper than a (locking) LRU delete
        sock_fds.delete(&k);
    return 0;
}
#endif
