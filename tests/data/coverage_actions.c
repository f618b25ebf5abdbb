/* Behaviours busybox cannot do, for tests/test_default_rules_coverage.py.
 * Built with `gcc -static` and run inside a test container:
 *   coverage_actions ptrace-poke            PTRACE_POKEDATA into a traced child
 *   coverage_actions setuid0                setuid(0) (run it as a non-root user: EPERM)
 *   coverage_actions setuid NUID            setuid(NUID) (a root process dropping privileges)
 *   coverage_actions unix-connect PATH      connect(2) to a unix socket path (may not exist)
 *   coverage_actions spawn PROG [ARG...]    fork, exec PROG, wait (a parent with this file's name)
 *   coverage_actions exec-as ARGV0 PROG [ARG...]  exec PROG with a chosen argv[0]
 *   coverage_actions procvm-read|procvm-write  process_vm_readv/writev of a child's memory
 *   coverage_actions suid-sim               as root: real uid 65534 keeping euid 0 (a setuid-root
 *                                           program run by a user), then setuid(0), which succeeds
 * Each performs the syscall for real; failing is fine (the probe sees the attempt). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static long word = 42;

static int ptrace_poke(void)
{
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        _exit(word == 7 ? 0 : 1);
    }
    waitpid(child, 0, 0);  /* stopped */
    long r = ptrace(PTRACE_POKEDATA, child, &word, (void *)7L);
    printf("ptrace pokedata: %ld\n", r);
    ptrace(PTRACE_CONT, child, 0, 0);
    int st = 0;
    waitpid(child, &st, 0);
    return 0;
}

static int unix_connect(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
    int r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
    printf("connect %s: %d\n", path, r);
    close(s);
    return 0;
}

static int spawn(char **argv, char **envp)
{
    pid_t child = fork();
    if (child == 0) {
        execve(argv[0], argv, envp);
        perror("execve");
        _exit(127);
    }
    int st = 0;
    waitpid(child, &st, 0);
    return 0;
}

static int procvm(int write)
{
    pid_t child = fork();
    if (child == 0) {
        sleep(3);
        _exit(0);
    }
    long buf = word;
    struct iovec local = {&buf, sizeof(buf)}, remote = {&word, sizeof(word)};
    ssize_t r = write ? process_vm_writev(child, &local, 1, &remote, 1, 0)
                      : process_vm_readv(child, &local, 1, &remote, 1, 0);
    printf("process_vm_%s: %zd\n", write ? "writev" : "readv", r);
    kill(child, SIGKILL);
    waitpid(child, 0, 0);
    return 0;
}

/* An anonymous mapping made writable and executable at once, then an RW page turned W+X
 * (a shellcode loader's two ways); and a userfaultfd for user-mode faults only (allowed to
 * unprivileged users whatever vm.unprivileged_userfaultfd says). */
static int wxmem(void)
{
    void *a = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *b = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int r = b == MAP_FAILED ? -1 : mprotect(b, 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
    return printf("mmap rwx: %p, mprotect rwx: %d\n", a, r) < 0;
}

static int uffd(void)
{
    long fd = syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */ | O_CLOEXEC);
    return printf("userfaultfd: %ld\n", fd) < 0;
}

int main(int argc, char **argv, char **envp)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "ptrace-poke"))
        return ptrace_poke();
    if (!strcmp(what, "wxmem"))
        return wxmem();
    if (!strcmp(what, "userfaultfd"))
        return uffd();
    if (!strcmp(what, "setuid0"))
        return printf("setuid(0): %d\n", setuid(0)) < 0;
    if (!strcmp(what, "setuid") && argc > 2)
        return printf("setuid(%s): %d\n", argv[2], setuid(atoi(argv[2]))) < 0;
    if (!strcmp(what, "procvm-read") || !strcmp(what, "procvm-write"))
        return procvm(!strcmp(what, "procvm-write"));
    if (!strcmp(what, "suid-sim")) {
        int a = setresuid(65534, 0, 0);
        return printf("setresuid(65534, 0, 0): %d, setuid(0): %d\n", a, setuid(0)) < 0;
    }
    if (!strcmp(what, "unix-connect") && argc > 2)
        return unix_connect(argv[2]);
    if (!strcmp(what, "spawn") && argc > 2)
        return spawn(argv + 2, envp);
    if (!strcmp(what, "exec-as") && argc > 3) {
        char *prog = argv[3];
        argv[3] = argv[2];
        execve(prog, argv + 3, envp);
        perror("execve");
        return 127;
    }
    fprintf(stderr, "usage: coverage_actions ptrace-poke|setuid0|setuid N|unix-connect PATH|spawn PROG..."
                    "|exec-as ARGV0 PROG...|procvm-read|procvm-write|suid-sim\n");
    return 2;
}
