// Per-cgroup syscall sets, aggregated in the kernel for seccomp profiles.
//
// raw_syscalls:sys_enter sets bit <syscall nr> in the bitmap of the calling
// task's cgroup-v2 id. Nothing goes to user space per syscall: user space
// reads one map value per container when it builds a profile
// (services/probe/syscall_profile.py). Every name here starts with sc_ so
// the file compiles in the probe's combined unit.
//
// Numbers are x86_64 syscall numbers. A 32-bit (ia32) task's sys_enter id is
// its i386 number; telling those apart needs kernel struct offsets, so they
// are recorded as they come (rare in containers; documented limitation).
// needs: kernel.bpf.c

#define SC_MAX_SYSCALLS 512
#define SC_WORDS (SC_MAX_SYSCALLS / 64)
#ifndef SC_MAX_CGROUPS
#define SC_MAX_CGROUPS 4096  // -DSC_MAX_CGROUPS=N overrides (tests use 1)
#endif
#define SC_ROOT_CGROUP 1

struct sc_bits {
    u64 w[SC_WORDS];
};

// cgroup id -> syscalls seen in it. Bounded: new cgroups past the cap are
// counted in sc_counters[SC_CNT_MAP_FULL] and not tracked.
BPF_HASH(sc_bitmaps, u64, struct sc_bits, SC_MAX_CGROUPS);

#define SC_CNT_MAP_FULL 0       // cgroups not tracked: sc_bitmaps full
#define SC_CNT_OUT_OF_RANGE 1   // syscall numbers >= SC_MAX_SYSCALLS (or < 0)
#define SC_CNT_N 2
BPF_ARRAY(sc_counters, u64, SC_CNT_N);

static __always_inline void sc_count(int idx)
{
    u64 *c = sc_counters.lookup(&idx);
    if (c)
        __sync_fetch_and_add(c, 1);
}

TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
#ifdef HAVE_MODULE_FALLBACK
    module_fallback(args->id, args->args[0], args->args[1], args->args[2]);
#endif
    u64 cg = bpf_get_current_cgroup_id();
    if (cg <= SC_ROOT_CGROUP)  // host processes in the root cgroup (or no v2 cgroup)
        return 0;
    long nr = args->id;
    if (nr < 0 || nr >= SC_MAX_SYSCALLS) {
        sc_count(SC_CNT_OUT_OF_RANGE);
        return 0;
    }
    struct sc_bits *bits = sc_bitmaps.lookup(&cg);
    if (!bits) {
        struct sc_bits zero = {};
        // insert() is BPF_NOEXIST: it never clears bits that a concurrent
        // first syscall of the same cgroup on another CPU has just set.
        sc_bitmaps.insert(&cg, &zero);
        bits = sc_bitmaps.lookup(&cg);
        if (!bits) {  // not inserted and not there: the map is full
            sc_count(SC_CNT_MAP_FULL);
            return 0;
        }
    }
    u32 word = ((u32)nr >> 6) & (SC_WORDS - 1);
    u64 bit = 1ULL << ((u32)nr & 63);
    // Test first: after warm-up nearly every syscall is already recorded,
    // and a plain read keeps the cache line shared between CPUs.
    if (!(bits->w[word] & bit))
        __sync_fetch_and_or(&bits->w[word], bit);
    return 0;
}
