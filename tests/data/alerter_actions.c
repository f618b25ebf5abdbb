/* Behaviours busybox cannot do, for tests/test_default_rules.py.
 * Built with `gcc -static` and run inside a test container:
 *   actions ptrace-attach | traceme | bpf | packet | memfd-exec
 * Each performs the syscall for real; failing with EPERM is fine (the
 * probe sees the attempt). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

static int memfd_exec(char **envp)
{
    int fd = memfd_create("payload", MFD_CLOEXEC);
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
        return memfd_exec(envp);
    fprintf(stderr, "usage: actions ptrace-attach|traceme|bpf|packet|memfd-exec\n");
    return 2;
}
