"""User stack symbols (services/probe/symbols.py, elfsyms.py) on real running programs:
PIE, static and stripped C programs, a deleted binary, a 32-bit one, C++ names, and
processes that are gone or not yet reaped."""
from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from services.probe.elfsyms import ElfSymbols, demangle
from services.probe.symbols import UNKNOWN, UserSymbols

SPIN_C = r'''
#include <stdio.h>
#include <unistd.h>
volatile unsigned long n;
__attribute__((noinline)) void eunomia_spin_here(void) { for (;;) n++; }
/* a C function under a C++ name: frames in it come out demangled */
__attribute__((noinline)) void cxx_named(int x) __asm__("_ZN7eunomia6detail4spinEi");
__attribute__((noinline)) void cxx_named(int x) { n += x; }
int main(void) {
    printf("%p %p\n", (void *)eunomia_spin_here, (void *)cxx_named);
    fflush(stdout);
    cxx_named(1);
    eunomia_spin_here();
}
'''

SPIN32_S = '''
.globl _start
.globl inner_label
.type eunomia_spin32, @function
.text
_start:
    call eunomia_spin32
eunomia_spin32:
    nop
inner_label:
    jmp eunomia_spin32
.size eunomia_spin32, . - eunomia_spin32
'''


class Running:
    """A built program, started; `addrs` what it printed (its functions' addresses)."""

    def __init__(self, exe: Path, prints: bool = True) -> None:
        self.p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE)
        self.addrs = [int(a, 16) for a in self.p.stdout.readline().split()] if prints else []

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc) -> None:
        self.p.kill()
        self.p.wait()


def build(tmp: Path, name: str, *flags: str) -> Path:
    src = tmp / "spin.c"
    src.write_text(SPIN_C)
    out = tmp / name
    subprocess.run(["gcc", "-O1", *flags, "-o", str(out), str(src)], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("flags", [("-pie", "-fPIE"), ("-no-pie",), ("-static",), ("-static-pie",)],
                         ids=["pie", "no-pie", "static", "static-pie"])
def test_functions_of_a_running_program_are_named(tmp_path, flags):
    exe = build(tmp_path, "spin", *flags)
    syms = UserSymbols()
    with Running(exe) as prog:
        spin, cxx = prog.addrs
        assert syms.name(spin, prog.p.pid) == "eunomia_spin_here"
        assert syms.name(spin + 3, prog.p.pid) == "eunomia_spin_here"  # inside it
        assert syms.name(cxx, prog.p.pid) == "eunomia::detail::spin(int)"


def test_a_stripped_program_is_named_after_its_file_and_libc_after_its_functions(tmp_path):
    exe = build(tmp_path, "stripped-spin", "-s")
    syms = UserSymbols()
    with Running(exe) as prog:
        spin, _ = prog.addrs
        assert syms.name(spin, prog.p.pid) == "[stripped-spin]"
        # its libc still has .dynsym: a libc function of this very process
        assert syms.name(_libc_addr(prog.p.pid, "write"), prog.p.pid) == "write"
        assert syms.name(1, prog.p.pid) == UNKNOWN  # in no mapping


def _libc_addr(pid: int, fn: str) -> int:
    """`fn`'s address in `pid`, which maps the same libc as we do: ours, moved by the bases."""
    libc = ctypes.CDLL("libc.so.6")
    ours = ctypes.cast(getattr(libc, fn), ctypes.c_void_p).value

    def base(p: int) -> int:
        for line in Path(f"/proc/{p}/maps").read_text().splitlines():
            parts = line.split()
            if len(parts) == 6 and os.path.basename(parts[5]).startswith("libc.so") and parts[2] == "00000000":
                return int(parts[0].split("-")[0], 16)
        raise AssertionError(f"no libc mapped in {p}")
    return ours - base(os.getpid()) + base(pid)


def test_a_deleted_binary_is_still_read_through_map_files(tmp_path):
    exe = build(tmp_path, "gone-spin")
    syms = UserSymbols()
    with Running(exe) as prog:
        exe.unlink()
        assert syms.name(prog.addrs[0], prog.p.pid) == "eunomia_spin_here"


def test_a_32_bit_program(tmp_path):
    src, obj, exe = tmp_path / "s32.s", tmp_path / "s32.o", tmp_path / "s32"
    src.write_text(SPIN32_S)
    if shutil.which("as") is None or subprocess.run(["as", "--32", "-o", str(obj), str(src)]).returncode:
        pytest.skip("no 32-bit assembler here")
    subprocess.run(["ld", "-m", "elf_i386", "-o", str(exe), str(obj)], check=True)
    nm = subprocess.run(["nm", str(exe)], check=True, capture_output=True, text=True).stdout
    addr = next(int(ln.split()[0], 16) for ln in nm.splitlines() if ln.endswith(" eunomia_spin32"))
    label = next(int(ln.split()[0], 16) for ln in nm.splitlines() if ln.endswith(" inner_label"))
    with open(exe, "rb") as f:
        elf = ElfSymbols(f)
    assert elf.name(addr + 1) == "eunomia_spin32"
    assert elf.name(label) == "eunomia_spin32"   # an untyped label inside a sized function: the function
    assert elf.name(addr - 1) == "_start"        # untyped, unsized: up to the next symbol
    syms = UserSymbols()
    with Running(exe, prints=False) as prog:
        time.sleep(0.1)
        assert syms.name(addr, prog.p.pid) == "eunomia_spin32"


def test_gone_and_unreaped_processes_are_unknown_and_close_nothing_of_ours(tmp_path):
    """libbcc 0.26's symbol cache, once used here, closed a descriptor it never opened when it
    built an exited (unreaped) process's perf-map module: memory as a freed object of its size
    leaves it (a number of ours at +0x10) made it close ours. Nothing of the kind may happen now."""
    exe = build(tmp_path, "spin")
    victim = os.open("/dev/null", os.O_RDONLY)   # stands for a BPF program's descriptor
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    syms = UserSymbols()
    try:
        with Running(exe) as prog:
            spin = prog.addrs[0]
            assert syms.name(spin, prog.p.pid) == "eunomia_spin_here"
            prog.p.kill()
            while Path(f"/proc/{prog.p.pid}/stat").read_text().split(") ")[1][0] != "Z":
                time.sleep(0.01)
            for _ in range(8):
                chunk = libc.malloc(0x58)
                ctypes.c_int.from_address(chunk + 0x10).value = victim
                libc.free(chunk)
            fresh = UserSymbols()
            assert fresh.name(spin, prog.p.pid) == UNKNOWN   # a zombie has no memory map left
            fcntl.fcntl(victim, fcntl.F_GETFD)               # still ours
        syms.forget_maps()
        assert syms.name(spin, prog.p.pid) == UNKNOWN
        assert syms.name(spin, 0x7FFFFFF0) == UNKNOWN        # no such process
    finally:
        os.close(victim)


def test_bounds(tmp_path):
    exe = build(tmp_path, "spin")
    syms = UserSymbols(max_pids=2, max_files=1)
    progs = [Running(exe) for _ in range(3)]
    try:
        for prog in progs:
            assert syms.name(prog.addrs[0], prog.p.pid) == "eunomia_spin_here"
        assert len(syms._procs) == 2 and len(syms._files) == 1
        libc_only = UserSymbols(max_bytes=1)   # over budget: only the file last read is kept
        for prog in progs:
            libc_only.name(prog.addrs[0], prog.p.pid)
            libc_only.name(_libc_addr(prog.p.pid, "write"), prog.p.pid)
        assert len(libc_only._files) == 1 and libc_only.nbytes == next(iter(libc_only._files.values())).nbytes
    finally:
        for prog in progs:
            prog.__exit__()


def test_not_an_elf_file_and_demangling(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\0" * 10)
    from services.probe.elfsyms import ElfError
    with pytest.raises(ElfError), open(junk, "rb") as f:
        ElfSymbols(f)
    assert demangle("_ZN3foo3barEv") == "foo::bar()"
    assert demangle("main") == "main" and demangle("_Znot-a-name") == "_Znot-a-name"


def test_corrupt_elf_files_never_raise_past_the_reader_nor_hang(tmp_path):
    """A monitored process chooses the files it maps: any bytes in the headers give symbols or
    ElfError (and UserSymbols takes any failure as "no symbols"), quickly."""
    import random

    from services.probe.elfsyms import ElfError
    good = build(tmp_path, "spin").read_bytes()
    rnd = random.Random(7)
    started = time.monotonic()
    for _ in range(1000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 6)):   # the ELF, program and section headers, and the tables
            at = rnd.choice([rnd.randrange(64), rnd.randrange(len(data)), len(data) - 1 - rnd.randrange(4096)])
            data[at] = rnd.randrange(256)
        (tmp_path / "bad").write_bytes(data)
        with open(tmp_path / "bad", "rb") as f:
            try:
                syms = ElfSymbols(f)
            except ElfError:
                continue
            syms.name(rnd.randrange(1 << 32))
            syms.address(rnd.randrange(1 << 20))
    assert time.monotonic() - started < 30


def test_a_fifo_or_another_file_under_the_mapped_name_is_not_read(tmp_path):
    """When /proc/<pid>/map_files cannot open a mapping, its name is tried under the process's
    root: a FIFO put there must not block the drain, another file must not be taken for it."""
    from services.probe.symbols import _Mapping, _Process
    fifo, other = tmp_path / "fifo", tmp_path / "other"
    os.mkfifo(fifo)
    shutil.copy(build(tmp_path, "spin"), other)
    syms = UserSymbols()
    started = time.monotonic()
    for path, inode in ((fifo, fifo.stat().st_ino), (other, other.stat().st_ino + 1)):
        proc = _Process([], [], 0.0)
        m = _Mapping(0x1000, 0x2000, 0, inode, str(path), "1000-2000")   # no such range: map_files fails
        assert syms._symbols(os.getpid(), proc, m) is None
    assert time.monotonic() - started < 5
    proc = _Process([], [], 0.0)
    m = _Mapping(0x1000, 0x2000, 0, other.stat().st_ino, str(other), "1000-2000")
    assert syms._symbols(os.getpid(), proc, m) is not None   # the very file: read
