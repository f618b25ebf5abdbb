"""Seccomp profiles from the syscalls a container really made (recorded in the kernel by bpf/syscalls.bpf.c)."""
