// Performance figures per cgroup, aggregated in the kernel (no event per sample):
// log2 latency histograms (run queue, block I/O, TCP connect, TCP RTT) and
// counters (CPU time, block bytes, network bytes, file bytes, OOM kills), read periodically by
// services/probe/perf.py. The OOM kill is also an event (K_OOM) for rules.
//
// Cgroup attribution without kernel structs: a task's cgroup is learned when it
// runs (sched_switch sees the current task as `prev`), block requests take the
// issuer's cgroup, sockets the connecting task's.
// needs: file.bpf.c

#define PERF_SLOTS 32          // log2 buckets of microseconds: slot i counts [2^i, 2^(i+1)) us
#define H_RUNQ 0
#define H_BLOCK 1
#define H_CONNECT 2
#define H_RTT 3
#define H_MAX 4

struct perf_hkey { u64 cgroup_id; u32 which; u32 pad; };
struct perf_hist { u64 slot[PERF_SLOTS]; u64 sum_ns; u64 count; };
BPF_HASH(perf_hists, struct perf_hkey, struct perf_hist, 8192);

struct perf_cg { u64 cpu_ns; u64 switches; u64 block_bytes; u64 oom_kills; u64 connects; u64 failed;
                 u64 net_tx; u64 net_rx; u64 file_rd; u64 file_wr; };
BPF_HASH(perf_cgs, u64, struct perf_cg, 4096);
BPF_PERCPU_ARRAY(perf_full, u64, 1);     // updates lost: a map was full
BPF_ARRAY(perf_on, u8, 1);               // switched by the probe (ProbeConfig.perf)

struct perf_task { u64 wake_ts; u64 cgroup_id; };
BPF_TABLE("lru_hash", u32, struct perf_task, perf_tasks, 65536);   // tid -> last cgroup, wakeup time
BPF_PERCPU_ARRAY(perf_last_switch, u64, 1);                          // ts of this CPU's last switch

struct perf_start { u64 ts; u64 cgroup_id; };
struct perf_rq { u32 dev; u32 pad; u64 sector; };
BPF_TABLE("lru_hash", struct perf_rq, struct perf_start, perf_rqs, 16384);  // in-flight block requests
BPF_TABLE("lru_hash", u64, struct perf_start, perf_socks, 16384);           // socket -> connect start, cgroup

static __always_inline int perf_enabled(void)
{
    u32 zero = 0;
    u8 *on = perf_on.lookup(&zero);
    return on && *on;
}

static __always_inline void perf_lost(void)
{
    u32 zero = 0;
    u64 *n = perf_full.lookup(&zero);
    if (n)
        *n += 1;
}

static __always_inline struct perf_cg *perf_cg_of(u64 cg)
{
    struct perf_cg *c = perf_cgs.lookup(&cg);
    if (!c) {
        struct perf_cg zero = {};
        perf_cgs.insert(&cg, &zero);
        c = perf_cgs.lookup(&cg);
        if (!c)
            perf_lost();
    }
    return c;
}

static __always_inline void perf_observe(u64 cg, u32 which, u64 delta_ns)
{
    if (cg <= 1)
        return;  // the root cgroup: host processes, idle
    struct perf_hkey k = {cg, which, 0};
    struct perf_hist *h = perf_hists.lookup(&k);
    if (!h) {
        struct perf_hist zero = {};
        perf_hists.insert(&k, &zero);
        h = perf_hists.lookup(&k);
        if (!h) {
            perf_lost();
            return;
        }
    }
    u64 us = delta_ns / 1000;
    u32 slot = us ? bpf_log2l(us) : 0;
    if (slot >= PERF_SLOTS)
        slot = PERF_SLOTS - 1;
    __sync_fetch_and_add(&h->slot[slot], 1);
    __sync_fetch_and_add(&h->sum_ns, delta_ns);
    __sync_fetch_and_add(&h->count, 1);
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    if (!perf_enabled())
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 cg = bpf_get_current_cgroup_id();  // of prev: it is still current here
    u32 zero = 0;
    u64 *last = perf_last_switch.lookup(&zero);
    if (last) {
        if (*last && cg > 1) {
            struct perf_cg *c = perf_cg_of(cg);
            if (c) {
                __sync_fetch_and_add(&c->cpu_ns, now - *last);
                __sync_fetch_and_add(&c->switches, 1);
            }
        }
        *last = now;
    }
    u32 prev = args->prev_pid, next = args->next_pid;
    if (prev) {  // a preempted task waits in the run queue from now on
        struct perf_task t = {args->prev_state == 0 ? now : 0, cg};
        perf_tasks.update(&prev, &t);
    }
    if (next) {
        struct perf_task *t = perf_tasks.lookup(&next);
        if (t && t->wake_ts) {
            perf_observe(t->cgroup_id, H_RUNQ, now - t->wake_ts);
            t->wake_ts = 0;
        }
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    if (!perf_enabled())
        return 0;
    u32 pid = args->pid;
    struct perf_task *t = perf_tasks.lookup(&pid);
    if (t)  // known from its last run; a task never seen running has no cgroup yet
        t->wake_ts = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    if (!perf_enabled())
        return 0;
    u32 pid = args->pid;
    struct perf_task t = {bpf_ktime_get_ns(), bpf_get_current_cgroup_id()};  // the parent wakes its child
    perf_tasks.update(&pid, &t);
    return 0;
}

#if HAVE_TP(block, block_rq_issue) && HAVE_TP(block, block_rq_complete)
TRACEPOINT_PROBE(block, block_rq_issue)
{
    if (!perf_enabled())
        return 0;
    u64 cg = bpf_get_current_cgroup_id();
    if (cg <= 1)
        return 0;  // issued by a kernel thread or the host: no container to charge
    struct perf_rq k = {args->dev, 0, args->sector};
    struct perf_start s = {bpf_ktime_get_ns(), cg};
    perf_rqs.update(&k, &s);
    struct perf_cg *c = perf_cg_of(cg);
    if (c)
        __sync_fetch_and_add(&c->block_bytes, args->bytes);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    struct perf_rq k = {args->dev, 0, args->sector};
    struct perf_start *s = perf_rqs.lookup(&k);
    if (!s)
        return 0;
    perf_observe(s->cgroup_id, H_BLOCK, bpf_ktime_get_ns() - s->ts);
    perf_rqs.delete(&k);
    return 0;
}
#endif

// A raw tracepoint (net.bpf.c has the tracepoint): args are (sk, oldstate, newstate);
// only the socket's address is used, as a key.
#define PERF_TCP_ESTABLISHED 1
#define PERF_TCP_SYN_SENT 2
#define PERF_TCP_CLOSE 7
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
    if (!perf_enabled())
        return 0;
    u64 sk = ctx->args[0];
    int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];
    if (newstate == PERF_TCP_SYN_SENT) {  // inside connect(): the caller's cgroup
        u64 cg = bpf_get_current_cgroup_id();
        if (cg <= 1)
            return 0;
        struct perf_start s = {bpf_ktime_get_ns(), cg};
        perf_socks.update(&sk, &s);
        return 0;
    }
    if (oldstate != PERF_TCP_SYN_SENT)
        return 0;
    struct perf_start *s = perf_socks.lookup(&sk);
    if (!s || !s->ts)
        return 0;  // not seen entering SYN_SENT, or already established
    struct perf_cg *c = perf_cg_of(s->cgroup_id);
    if (newstate == PERF_TCP_ESTABLISHED) {
        perf_observe(s->cgroup_id, H_CONNECT, bpf_ktime_get_ns() - s->ts);
        if (c)
            __sync_fetch_and_add(&c->connects, 1);
        s->ts = 0;  // kept: the socket's cgroup for its RTT samples
    } else {
        if (c)
            __sync_fetch_and_add(&c->failed, 1);
        perf_socks.delete(&sk);
    }
    return 0;
}

#if HAVE_TP(tcp, tcp_probe)
TRACEPOINT_PROBE(tcp, tcp_probe)
{
    if (!perf_enabled())
        return 0;
    u64 sk = (u64)args->skaddr;
    struct perf_start *s = perf_socks.lookup(&sk);
    if (!s || !args->srtt)
        return 0;
    perf_observe(s->cgroup_id, H_RTT, (u64)args->srtt * 1000);  // srtt is in microseconds
    return 0;
}
#endif

// Network bytes: sock_sendmsg/sock_recvmsg return in the caller's context (inet sockets only).
#define PERF_AF_INET 2
#define PERF_AF_INET6 10
static __always_inline void perf_net_bytes(u16 family, int ret, int rx)
{
    if (ret <= 0 || (family != PERF_AF_INET && family != PERF_AF_INET6) || !perf_enabled())
        return;
    u64 cg = bpf_get_current_cgroup_id();
    if (cg <= 1)
        return;
    struct perf_cg *c = perf_cg_of(cg);
    if (!c)
        return;
    if (rx)
        __sync_fetch_and_add(&c->net_rx, ret);
    else
        __sync_fetch_and_add(&c->net_tx, ret);
}

#if HAVE_TP(sock, sock_send_length)
TRACEPOINT_PROBE(sock, sock_send_length)
{
    perf_net_bytes(args->family, args->ret, 0);
    return 0;
}
#endif

#if HAVE_TP(sock, sock_recv_length)
TRACEPOINT_PROBE(sock, sock_recv_length)
{
    perf_net_bytes(args->family, args->ret, 1);
    return 0;
}
#endif

#if HAVE_TP(oom, mark_victim)
TRACEPOINT_PROBE(oom, mark_victim)
{
    u64 cg = bpf_get_current_cgroup_id();  // the task whose allocation hit the limit
    struct perf_cg *c = cg > 1 ? perf_cg_of(cg) : 0;
    if (c)
        __sync_fetch_and_add(&c->oom_kills, 1);
    if (skip(K_OOM))
        return 0;
    struct ev_str1 *e = ev_reserve(K_OOM, sizeof(*e));
    if (!e)
        return 0;
    e->a[0] = 0;
    e->a[1] = args->pid;            // the victim (may differ from the task in the head)
    e->a[2] = args->total_vm;       // pages
    e->a[3] = args->anon_rss;
    e->a[4] = args->file_rss + args->shmem_rss;
    e->a[5] = args->uid;
    TP_DATA_LOC_READ_STR(e->s1, comm, sizeof(e->s1));
    ev_submit(e);
    return 0;
}
#endif

// Syscall latency per (cgroup, syscall): raw tracepoints on every syscall of the node, so
// attached only with ProbeConfig.syscall_latency, by the probe (services/probe/perf.py
// attach_syscall_latency): sys_enter/sys_exit also carry the ia32 programs.
struct perf_sys_start { u64 ts; u64 nr; };
struct perf_sys_key { u64 cgroup_id; u64 nr; };
struct perf_sys { u64 count; u64 total_ns; u64 max_ns; };
BPF_TABLE("lru_hash", u64, struct perf_sys_start, perf_sys_starts, 16384);  // tid -> syscall in progress
BPF_HASH(perf_syscalls, struct perf_sys_key, struct perf_sys, 16384);

int perf_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    if (bpf_get_current_cgroup_id() <= 1)
        return 0;
    u64 tid = bpf_get_current_pid_tgid();
    struct perf_sys_start st = {bpf_ktime_get_ns(), ctx->args[1]};
    perf_sys_starts.update(&tid, &st);
    return 0;
}

// File read/write bytes: what read/write/pread/pwrite/readv/writev (and the 64-bit p*v2
// forms) returned, when the fd is a regular file (sockets and pipes are not file I/O).
// On the syscall-latency programs' sys_exit (every syscall is seen there anyway); the fd
// is the first argument, still in the saved registers.
static __always_inline void perf_file_bytes(struct bpf_raw_tracepoint_args *ctx, u64 nr, u64 cg)
{
#if HAVE_KOFF
    long ret = ctx->args[1];
    int wr;
    if (ret <= 0)
        return;
    switch (nr) {
    case 0: case 17: case 19: case 295: case 327:   // read pread64 readv preadv preadv2
        wr = 0;
        break;
    case 1: case 18: case 20: case 296: case 328:   // write pwrite64 writev pwritev pwritev2
        wr = 1;
        break;
    default:
        return;
    }
    if (task_in_ia32())  // an ia32 call, numbered differently
        return;
    u64 fd = 0;
    bpf_probe_read_kernel(&fd, sizeof(fd), &((struct pt_regs *)ctx->args[0])->di);
    char *file = fd_file((u32)fd);
    char *inode = file ? kptr(file + OFF_FILE_INODE) : 0;
    u16 mode = 0;
    if (!inode || bpf_probe_read_kernel(&mode, sizeof(mode), inode + OFF_INODE_MODE) < 0
        || (mode & 0170000) != 0100000)  // S_IFREG
        return;
    struct perf_cg *c = perf_cg_of(cg);
    if (!c)
        return;
    if (wr)
        __sync_fetch_and_add(&c->file_wr, ret);
    else
        __sync_fetch_and_add(&c->file_rd, ret);
#endif
}

int perf_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct perf_sys_start *st = perf_sys_starts.lookup(&tid);
    if (!st)
        return 0;
    struct perf_sys_key k = {bpf_get_current_cgroup_id(), st->nr};
    u64 d = bpf_ktime_get_ns() - st->ts;
    perf_sys_starts.delete(&tid);
    perf_file_bytes(ctx, k.nr, k.cgroup_id);
    struct perf_sys *v = perf_syscalls.lookup(&k);
    if (!v) {
        struct perf_sys zero = {};
        perf_syscalls.insert(&k, &zero);
        v = perf_syscalls.lookup(&k);
        if (!v) {
            perf_lost();
            return 0;
        }
    }
    __sync_fetch_and_add(&v->count, 1);
    __sync_fetch_and_add(&v->total_ns, d);
    if (d > v->max_ns)
        v->max_ns = d;  // racy max: good enough for a "slowest" figure
    return 0;
}
