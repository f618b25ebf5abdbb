// CPU profiles per cgroup: a perf-event program (software cpu-clock, attached by
// services/probe/profiler.py at ProbeConfig.profile_hz on every CPU) counts
// samples per (cgroup, process, user stack, kernel stack) in the kernel; user
// space reads and clears the maps every few seconds and symbolises the stacks.
#include <uapi/linux/bpf_perf_event.h>

#ifndef PROF_STACKS
#define PROF_STACKS 4096  // distinct stacks per drain window (~1 KB each in the kernel)
#endif

struct prof_key {
    u64 cgroup_id;
    u32 pid;      // tgid: whose memory map symbolises the user stack
    s32 ustack;   // stack ids in prof_stacks; < 0: none (kernel thread) or lost (-EEXIST, -ENOMEM)
    s32 kstack;
    char comm[16];
};
BPF_STACK_TRACE(prof_stacks, PROF_STACKS);
BPF_HASH(prof_counts, struct prof_key, u64, PROF_STACKS);
BPF_PERCPU_ARRAY(prof_stats, u64, 2);  // [0] samples taken, [1] samples lost (counts map full)

int prof_sample(struct bpf_perf_event_data *ctx)
{
    u64 cg = bpf_get_current_cgroup_id();
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (cg <= 1 || tgid == 0)
        return 0;  // idle and the root cgroup (host) are not profiled
    if (excluded.lookup(&tgid))
        return 0;
    u32 i = 0;
    struct prof_key k = {};
    k.cgroup_id = cg;
    k.pid = tgid;
    k.ustack = prof_stacks.get_stackid(ctx, BPF_F_USER_STACK);
    k.kstack = prof_stacks.get_stackid(ctx, 0);
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    u64 *n = prof_counts.lookup(&k);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else {
        u64 one = 1;
        if (prof_counts.insert(&k, &one) < 0) {
            i = 1;
            n = prof_counts.lookup(&k);  // a racing CPU added it
            if (n) {
                __sync_fetch_and_add(n, 1);
                i = 0;
            }
        }
    }
    u64 *s = prof_stats.lookup(&i);
    if (s)
        *s += 1;
    if (i) {
        u32 zero = 0;
        s = prof_stats.lookup(&zero);
        if (s)
            *s += 1;
    }
    return 0;
}
