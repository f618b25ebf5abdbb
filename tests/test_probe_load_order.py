"""The probe's sources are compiled each after the files it names on `// needs:` lines
(services/probe/loader.py), not by the accident of their names' order; a file whose needs
are missing, disabled or circular is disabled too, and says why."""
from __future__ import annotations

import pytest

from services.probe import loader


@pytest.fixture
def tracefs(tmp_path):
    """A tracefs with one tracepoint (syscalls:sys_enter_getppid)."""
    (tmp_path / "tracefs/events/syscalls/sys_enter_getppid").mkdir(parents=True)
    return tmp_path / "tracefs"


def write(d, name: str, needs: str = "", tp: str = "syscalls, sys_enter_getppid") -> None:
    head = f"// {name}\n" + (f"// needs: {needs}\n" if needs else "")
    (d / name).write_text(head + f"TRACEPOINT_PROBE({tp}) {{ return 0; }}\n")


def test_files_come_after_what_they_need(tmp_path, tracefs):
    d = tmp_path / "bpf"
    d.mkdir()
    write(d, "a.bpf.c", "z.bpf.c m.bpf.c")
    write(d, "m.bpf.c", "z.bpf.c")
    write(d, "z.bpf.c")
    write(d, "b.bpf.c")
    plan = loader.plan_sources(d, tracefs)
    assert [p.name for p in plan.files] == ["z.bpf.c", "m.bpf.c", "a.bpf.c", "b.bpf.c"] and not plan.errors


def test_a_file_whose_needs_are_missing_disabled_or_circular_is_disabled(tmp_path, tracefs):
    d = tmp_path / "bpf"
    d.mkdir()
    write(d, "a.bpf.c", "gone.bpf.c")
    write(d, "b.bpf.c", "c.bpf.c")
    write(d, "c.bpf.c", "b.bpf.c")
    write(d, "d.bpf.c", tp="nosuchcat, nosuchevent")
    write(d, "e.bpf.c", "d.bpf.c")
    write(d, "f.bpf.c", "e.bpf.c")
    write(d, "ok.bpf.c")
    plan = loader.plan_sources(d, tracefs)
    assert [p.name for p in plan.files] == ["ok.bpf.c"]
    assert plan.dropped["a.bpf.c"] == f"needs gone.bpf.c (not in {d})"
    assert "a cycle: b.bpf.c -> c.bpf.c -> b.bpf.c" in plan.dropped["b.bpf.c"]
    assert plan.dropped["e.bpf.c"].startswith("needs d.bpf.c (tracepoint nosuchcat:nosuchevent not found")
    assert plan.dropped["f.bpf.c"].startswith("needs e.bpf.c (needs d.bpf.c")
    assert all(any(e.startswith(f"{n}: ") and "is disabled" in e for e in plan.errors) for n in plan.dropped)


def test_the_probe_sources_name_what_they_use():
    """Every bpf/*.bpf.c loads after the files it uses, whatever their names."""
    order = [p.name for p, _ in loader.load_order(loader.BPF_DIR, loader.SourcePlan())]
    assert order.index("file.bpf.c") < order.index("net.bpf.c") < order.index("syscalls_ia32.bpf.c")
    assert order.index("kernel.bpf.c") < order.index("syscalls.bpf.c")
