/* Behaviours busybox cannot do, for tests/test_default_rules.py.
 * Built with `gcc -static` and run inside a test container:
 *   actions ptrace-attach | traceme | bpf | packet | memfd-exec [NAME]
 *           | chmod OCTAL-MODE PATH | connect6 IPV6-ADDR PORT | unshare-as COMM
 *           | iouring-open PATH (an openat through an io_uring ring, no open syscall)
 *           | read PATH (opens PATH as written, then lingers 1.5 s: run it with `exec`, its own parent)
 *           | fchmod OCTAL-MODE PATH | fchown UID PATH (by an fd of PATH opened read-only: no path in the call)
 * Each performs the syscall for real; failing with EPERM is fine (the
 * probe sees the attempt). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/prctl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/io_uring.h>

/* chmod with the mode exactly as given (bits above 07777 included: the kernel ignores them). */
static int raw_chmod(const char *mode, const char *path)
{
    long r = syscall(SYS_chmod, path, strtoul(mode, 0, 8));
    printf("chmod %s %s: %ld\n", mode, path, r);
    return 0;
}

/* fchmod / fchown of an fd opened read-only: the call itself names no path. */
static int by_fd(const char *what, const char *arg, const char *path)
{
    int fd = open(path, O_RDONLY);
    long r = !strcmp(what, "fchmod") ? fchmod(fd, strtoul(arg, 0, 8)) : fchown(fd, atoi(arg), -1);
    printf("%s %s %s (fd %d): %ld\n", what, arg, path, fd, r);
    return 0;
}

/* Take the comm runc's init stage has, then unshare a mount namespace. */
static int unshare_as(const char *comm)
{
    prctl(PR_SET_NAME, comm, 0, 0, 0);
    printf("unshare as %s: %d\n", comm, unshare(CLONE_NEWNS));
    return 0;
}

static int connect6(const char *addr, const char *port)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(atoi(port));
    if (inet_pton(AF_INET6, addr, &sa.sin6_addr) != 1)
        return 2;
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    printf("connect %s: %d\n", addr, connect(s, (struct sockaddr *)&sa, sizeof(sa)));
    return 0;
}

static int ptrace_attach(void)
{
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    usleep(100000);
    long r = ptrace(PTRACE_ATTACH, child, 0, 0);
    printf("ptrace attach: %ld\n", r);
    kill(child, SIGKILL);
    waitpid(child, 0, 0);
    return 0;
}

static int bpf_load(void)
{
    struct bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insn_cnt = 2;
    attr.insns = (unsigned long)insns;
    attr.license = (unsigned long)"GPL";
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
    printf("bpf prog load: %ld\n", fd);
    return 0;
}

static int memfd_exec(const char *name, char **envp)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    int src = open("/bin/busybox", O_RDONLY);
    char buf[65536];
    ssize_t n;
    if (fd < 0 || src < 0)
        return 1;
    while ((n = read(src, buf, sizeof(buf))) > 0)
        if (write(fd, buf, n) != n)
            return 1;
    close(src);
    char *argv[] = {"true", 0};
    syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
    perror("execveat");
    return 1;
}

/* Open `path` through io_uring (raw syscalls, no liburing): the open never passes the
 * open/openat syscalls, only io_uring_setup and io_uring_enter. Prints the ring's result. */
static int iouring_open(const char *path)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    int ring = syscall(SYS_io_uring_setup, 4, &p);
    if (ring < 0) {
        perror("io_uring_setup");
        return 1;
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
    char *cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    unsigned tail = *(unsigned *)(sq + p.sq_off.tail);
    unsigned idx = tail & *(unsigned *)(sq + p.sq_off.ring_mask);
    struct io_uring_sqe *e = &sqes[idx];
    memset(e, 0, sizeof(*e));
    e->opcode = IORING_OP_OPENAT;
    e->fd = AT_FDCWD;
    e->addr = (unsigned long)path;
    e->open_flags = O_RDONLY;
    ((unsigned *)(sq + p.sq_off.array))[idx] = idx;
    __atomic_store_n((unsigned *)(sq + p.sq_off.tail), tail + 1, __ATOMIC_RELEASE);
    if (syscall(SYS_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, 0, 0) < 0) {
        perror("io_uring_enter");
        return 1;
    }
    unsigned head = *(unsigned *)(cq + p.cq_off.head);
    struct io_uring_cqe *c = (struct io_uring_cqe *)(cq + p.cq_off.cqes) + (head & *(unsigned *)(cq + p.cq_off.ring_mask));
    printf("io_uring openat %s: %d\n", path, c->res);
    return c->res < 0;
}

int main(int argc, char **argv, char **envp)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "ptrace-attach"))
        return ptrace_attach();
    if (!strcmp(what, "traceme"))
        return printf("traceme: %ld\n", ptrace(PTRACE_TRACEME, 0, 0, 0)) < 0;
    if (!strcmp(what, "bpf"))
        return bpf_load();
    if (!strcmp(what, "packet"))
        return printf("packet socket: %d\n", socket(AF_PACKET, SOCK_RAW, 0)) < 0;
    if (!strcmp(what, "memfd-exec"))
        return memfd_exec(argc > 2 ? argv[2] : "payload", envp);
    if (!strcmp(what, "chmod") && argc > 3)
        return raw_chmod(argv[2], argv[3]);
    if ((!strcmp(what, "fchmod") || !strcmp(what, "fchown")) && argc > 3)
        return by_fd(what, argv[2], argv[3]);
    if (!strcmp(what, "unshare-as") && argc > 2)
        return unshare_as(argv[2]);
    if (!strcmp(what, "connect6") && argc > 3)
        return connect6(argv[2], argv[3]);
    if (!strcmp(what, "iouring-open") && argc > 2)
        return iouring_open(argv[2]);
    if (!strcmp(what, "read") && argc > 2) {
        int fd = open(argv[2], O_RDONLY);
        printf("open %s: %d\n", argv[2], fd);
        fflush(stdout);
        usleep(1500000);
        return fd < 0;
    }
    fprintf(stderr, "usage: actions ptrace-attach|traceme|bpf|packet|memfd-exec [NAME]|chmod MODE PATH|connect6 ADDR PORT|unshare-as COMM|iouring-open PATH|read PATH|fchmod MODE PATH|fchown UID PATH\n");
    return 2;
}
