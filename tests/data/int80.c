/* Makes security-relevant syscalls through the ia32 ABI (int $0x80) from a
 * 64-bit static binary: needs no 32-bit libc. Every pointer passed must be
 * below 4 GiB, so all buffers are static (a non-PIE binary's data). */
static long int80(long nr, long a, long b, long c, long d, long e)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e) : "memory");
    return ret;
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
static unsigned char sa[16] = {2, 0, 0, 80, 169, 254, 169, 254};  /* AF_INET 169.254.169.254:80 */
static unsigned int attr[32];

int main(void)
{
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
    argv32[0] = (unsigned int)(long)arg0;
    argv32[1] = (unsigned int)(long)arg1;
    int80(11, (long)truebin, (long)argv32, 0, 0, 0);      /* execve("/bin/true", ["true", "int80"]) */
    return 1;
}
