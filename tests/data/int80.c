/* Makes security-relevant syscalls through the ia32 ABI (int $0x80) from a
 * 64-bit static binary: needs no 32-bit libc. Every pointer passed must be
 * below 4 GiB, so all buffers are static (a non-PIE binary's data).
 *
 * `int80 native` makes only the second part (ownership, truncation, sockets,
 * dup) with the x86_64 `syscall` instruction instead: the same calls with the
 * same arguments, so a test can compare the two ABIs' events one by one. */
static long int80(long nr, long a, long b, long c, long d, long e)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e) : "memory");
    return ret;
}

static long sys64(long nr, long a, long b, long c, long d, long e)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

static int native;

/* One call in the chosen ABI: the i386 number n32 through int $0x80, or the x86_64 number n64. */
static long sc(long n32, long n64, long a, long b, long c, long d, long e)
{
    return native ? sys64(n64, a, b, c, d, e) : int80(n32, a, b, c, d, e);
}

/* A socketcall(2) sub-call (i386: its arguments in an array), or its own x86_64 syscall. */
static unsigned int sargs[4];
static long sockcall(int call, long n64, long a, long b, long c)
{
    if (native)
        return sys64(n64, a, b, c, 0, 0);
    sargs[0] = (unsigned int)a;
    sargs[1] = (unsigned int)b;
    sargs[2] = (unsigned int)c;
    sargs[3] = 0;
    return int80(102, call, (long)sargs, 0, 0, 0);
}

static char shadow[] = "/etc/shadow";
static char etc[] = "/etc";
static char rel[] = "shadow";
static char sl[] = "sl";
static char hl[] = "hl";
static char hl2[] = "hl2";
static char dotd[] = ".d";
static char src[] = "none";
static char dst[] = "/mnt";
static char fstype[] = "tmpfs";
static char truebin[] = "/bin/true";
static char arg0[] = "true";
static char arg1[] = "int80";
static unsigned int argv32[3];
static char preload[] = "LD_PRELOAD=/tmp/int80.so";
static char plain[] = "A=1";
static unsigned int envp32[3];
static unsigned char sa[16] = {2, 0, 0, 80, 169, 254, 169, 254};  /* AF_INET 169.254.169.254:80 */
static unsigned int attr[32];
static char logf[] = "/var/log/int80.log";
static unsigned char lo1[16] = {2, 0, 0x10, 0xe1, 127, 0, 0, 1};  /* AF_INET 127.0.0.1:4321 */
static unsigned char lo2[16] = {2, 0, 0x10, 0xe2, 127, 0, 0, 1};  /* AF_INET 127.0.0.1:4322 */
static unsigned char peer[16];
static unsigned int plen;
static int one = 1;

/* ownership, truncation, sockets and dup: in either ABI */
static void second_part(void)
{
    long unchanged16 = native ? -1 : 0xffff;  /* "unchanged" of chown16 & co, and of the 64-bit calls */
    long f, e, l, c, a, l2, c2, a2, c3;
    for (int fd = 3; fd < 64; fd++)
        sc(6, 3, fd, 0, 0, 0, 0);                           /* close: from here both ABIs number fds alike */
    /* open(log, O_WRONLY|O_CREAT|O_LARGEFILE), no O_TRUNC; without O_LARGEFILE (forced only
     * for 64-bit callers) ftruncate64 past 2 GiB is EINVAL, as for any non-LFS 32-bit program */
    f = sc(5, 2, (long)logf, 0100101, 0640, 0, 0);
    e = sc(5, 2, (long)etc, 0200000, 0, 0, 0);              /* open("/etc", O_DIRECTORY) */
    sc(94, 91, f, 0600, 0, 0, 0);                           /* fchmod(f, 0600) */
    sc(182, 92, (long)shadow, 1000, unchanged16, 0, 0);     /* chown16 | chown(shadow, 1000, unchanged) */
    sc(16, 94, (long)shadow, 1001, 0, 0, 0);                /* lchown16 | lchown */
    sc(95, 93, f, 1002, unchanged16, 0, 0);                 /* fchown16 | fchown */
    sc(212, 92, (long)shadow, 1003, -1, 0, 0);              /* chown32 | chown */
    sc(198, 94, (long)shadow, 1004, 42, 0, 0);              /* lchown32 | lchown */
    sc(207, 93, f, 1005, 0, 0, 0);                          /* fchown32 | fchown */
    sc(298, 260, e, (long)rel, 1006, 0, 0x100);             /* fchownat(etc, "shadow", AT_SYMLINK_NOFOLLOW) */
    sc(92, 76, (long)logf, 0, 0, 0, 0);                     /* truncate(log, 0) */
    sc(93, 77, f, 0, 0, 0, 0);                              /* ftruncate(f, 0) */
    if (native) {
        sys64(76, (long)logf, 0x100000005L, 0, 0, 0);       /* truncate(log, 4 GiB + 5) */
        sys64(77, f, 0x100000007L, 0, 0, 0);                /* ftruncate(f, 4 GiB + 7) */
    } else {
        int80(193, (long)logf, 5, 1, 0, 0);                 /* truncate64: low word, high word */
        int80(194, f, 7, 1, 0, 0);                          /* ftruncate64 */
    }
    sc(359, 41, 17, 3, 0x0300, 0, 0);                       /* socket(AF_PACKET, SOCK_RAW, ETH_P_ALL) */
    sockcall(1, 41, 17, 2, 0x0300);                         /* socketcall socket(AF_PACKET, SOCK_DGRAM) */
    l = sc(359, 41, 2, 1, 0, 0, 0);                         /* socket(AF_INET, SOCK_STREAM) */
    sc(366, 54, l, 1, 2, (long)&one, 4);                    /* SO_REUSEADDR (the other ABI's run binds it too) */
    sc(361, 49, l, (long)lo1, 16, 0, 0);                    /* bind 127.0.0.1:4321 */
    sc(363, 50, l, 8, 0, 0, 0);                             /* listen */
    c = sockcall(1, 41, 2, 1, 0);                           /* socketcall socket(AF_INET, SOCK_STREAM) */
    sockcall(3, 42, c, (long)lo1, 16);                      /* socketcall connect */
    plen = 16;
    a = sc(364, 288, l, (long)peer, (long)&plen, 0, 0);     /* accept4 */
    sc(41, 32, a, 0, 0, 0, 0);                              /* dup(accepted) */
    sc(63, 33, a, 0, 0, 0, 0);                              /* dup2(accepted, 0): stdin is the socket */
    l2 = sockcall(1, 41, 2, 1, 0);
    sc(366, 54, l2, 1, 2, (long)&one, 4);
    sockcall(2, 49, l2, (long)lo2, 16);                     /* socketcall bind 127.0.0.1:4322 */
    sockcall(4, 50, l2, 8, 0);                              /* socketcall listen */
    c2 = sc(359, 41, 2, 1, 0, 0, 0);
    sc(362, 42, c2, (long)lo2, 16, 0, 0);                   /* connect */
    plen = 16;
    a2 = sockcall(5, 43, l2, (long)peer, (long)&plen);      /* socketcall accept | accept */
    c3 = sc(359, 41, 2, 1, 0, 0, 0);
    sc(362, 42, c3, (long)lo2, 16, 0, 0);
    sockcall(18, 288, l2, 0, 0);                            /* socketcall accept4, no peer address */
    sc(330, 292, a2, 1, 0, 0, 0);                           /* dup3(accepted, 1, 0): stdout is the socket */
}

int main(int argc, char **argv)
{
    if (argc > 1 && argv[1][0] == 'n') {                  /* "native" */
        native = 1;
        second_part();
        return 0;
    }
    int80(5, (long)shadow, 0, 0, 0, 0);                   /* open("/etc/shadow", O_RDONLY) */
    int80(12, (long)etc, 0, 0, 0, 0);                     /* chdir("/etc") */
    int80(295, -100, (long)rel, 0400, 0, 0);              /* openat(AT_FDCWD, "shadow", O_NOCTTY) */
    long dfd = int80(5, (long)etc, 0200000, 0, 0, 0);     /* open("/etc", O_DIRECTORY) */
    int80(295, dfd, (long)rel, 0400000, 0, 0);            /* openat(dirfd, "shadow", O_NOFOLLOW) */
    long s = int80(359, 2, 1, 0, 0, 0);                   /* socket(AF_INET, SOCK_STREAM) */
    int80(362, s, (long)sa, 16, 0, 0);                    /* connect */
    int80(26, 16, 999999, 0, 0, 0);                       /* ptrace(PTRACE_ATTACH, no such pid) */
    int80(213, 0, 0, 0, 0, 0);                            /* setuid32(0) */
    int80(21, (long)src, (long)dst, (long)fstype, 0, 0);  /* mount */
    int80(350, -1, (long)src, 0, 0, 0);                   /* finit_module(-1) */
    int80(357, 5, (long)attr, 128, 0, 0);                 /* bpf(BPF_PROG_LOAD) */
    int80(310, 0x20000, 0, 0, 0, 0);                      /* unshare(CLONE_NEWNS) */
    int80(83, (long)rel, (long)sl, 0, 0, 0);              /* symlink("shadow", "sl"), in /etc */
    int80(9, (long)rel, (long)hl, 0, 0, 0);               /* link("shadow", "hl") */
    int80(302, dfd, (long)hl, -100, (long)hl2, 0);        /* renameat(dirfd, "hl", AT_FDCWD, "hl2") */
    int80(39, (long)dotd, 0700, 0, 0, 0);                 /* mkdir(".d", 0700), in /etc */
    second_part();
    argv32[0] = (unsigned int)(long)arg0;
    argv32[1] = (unsigned int)(long)arg1;
    envp32[0] = (unsigned int)(long)plain;
    envp32[1] = (unsigned int)(long)preload;
    /* execve("/bin/true", ["true", "int80"], ["A=1", "LD_PRELOAD=/tmp/int80.so"]) */
    int80(11, (long)truebin, (long)argv32, (long)envp32, 0, 0);
    return 1;
}
