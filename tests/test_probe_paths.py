"""Path normalisation (services/probe/paths.py) and the kernel BTF reader
(services/probe/btf.py) that gives the path walker its struct offsets.
The kernel side is tested with real BPF in tests/test_probe.py."""
from __future__ import annotations

import struct

import pytest

from services.probe.btf import BTF, VMLINUX, BTFError, vmlinux
from services.probe.paths import absolute, fold
from shared.filterplan import climbs, judged_path


@pytest.mark.parametrize("raw,base,want", [
    ("/etc/shadow", None, "/etc/shadow"),
    ("/etc//shadow", None, "/etc/shadow"),
    ("//etc/./shadow", None, "/etc/shadow"),
    ("/tmp/../etc/shadow", None, "/etc/shadow"),
    ("/../../etc/shadow", None, "/etc/shadow"),     # `..` of / is /
    ("/etc/", None, "/etc"),
    ("shadow", "/etc", "/etc/shadow"),
    ("./x", "/dev/shm", "/dev/shm/x"),
    ("../etc/./shadow", "/tmp", "/etc/shadow"),
    ("etc/shadow", "/", "/etc/shadow"),
    ("a/../../../shadow", "/etc/x", "/shadow"),
    ("shadow", None, "shadow"),                     # base unknown: kept as written
    ("shadow", "", "shadow"),
    ("", "/etc", ""),
])
def test_absolute_paths(raw, base, want):
    assert absolute(raw, base) == want


@pytest.mark.parametrize("raw,base,judged,up", [
    ("..", "/a/b", "/a", True), (".", "/a/b", "/a/b", False), ("./", "/a", "/a", False),
    ("../../x", "/a/b/c", "/a/x", True), ("./../.././x", "/a/b/c", "/a/x", True),
    ("../../../x", "/a", "/x", True),                # never above the root
    ("..x", "/a", "/a/..x", False), (".x", "/a", "/a/.x", False), ("...", "/a", "/a/...", False),
    (".//x", "/a", "/a//x", False),                  # what follows is judged as written: sent
    ("a/../b", "/a", "/a/a/../b", False),
    ("../" * 9 + "x", "/a/b", "/../x", True),        # past DOTS_MAX: left as written, sent
    ("../x", None, "../x", True), ("/a/../b", None, "/a/../b", False),
])
def test_the_kernel_folds_leading_dots(raw, base, judged, up):
    """As bpf/file.bpf.c path_absolute: a relative path's leading `./` and `../` fold into its base."""
    assert judged_path(raw, base) == judged and climbs(raw) == up
    if base:  # what rules see is the lexical fold of base/raw, whatever the kernel folded
        assert absolute(raw, base) == fold(base + "/" + raw)


def test_fold_matches_the_judged_path_when_canonical():
    for raw, base in [("shadow", "/etc"), ("x", "/"), ("/etc/passwd", None), ("a/b", "/srv")]:
        j = judged_path(raw, base)
        assert fold(j) == j == absolute(raw, base)


def test_btf_of_the_running_kernel_places_stable_members():
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux on this kernel")
    btf = vmlinux()
    # struct path and struct qstr have kept these layouts for many years
    assert btf.member_offset("path", "mnt") == 0 and btf.member_offset("path", "dentry") == 8
    assert btf.member_offset("qstr", "len") == 4  # inside an anonymous union/struct
    assert "do_sys_openat2" in btf.funcs
    with pytest.raises(BTFError, match="no member nope"):
        btf.member_offset("path", "nope")
    with pytest.raises(BTFError, match="struct no_such_struct_x not in"):
        btf.member_offset("no_such_struct_x", "a")


def test_btf_that_is_not_btf_is_refused():
    with pytest.raises(BTFError, match="bad magic"):
        BTF(struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 0))


def test_without_btf_the_probe_says_what_it_loses(monkeypatch):
    from services.probe import btf, loader

    def missing():
        raise BTFError("cannot read the kernel's BTF /sys/kernel/btf/vmlinux: gone")
    monkeypatch.setattr(btf, "vmlinux", missing)
    plan = loader.SourcePlan()
    assert loader.kernel_offset_flags(plan) == ["-DHAVE_KOFF=0"]
    assert len(plan.errors) == 1 and "not resolved to absolute paths" in plan.errors[0] and "ia32" in plan.errors[0]


def test_offsets_from_btf_become_compiler_flags():
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux on this kernel")
    from services.probe import loader
    flags = loader.kernel_offset_flags(loader.SourcePlan())
    assert "-DHAVE_KOFF=1" in flags and "-DOFF_PATH_DENTRY=8" in flags
    assert len(flags) == len(loader.KERNEL_OFFSETS) + 1
