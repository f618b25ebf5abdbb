"""Freeing bcc's compiler module once the probe's programs are loaded.

bcc keeps, per BPF object, the clang/LLVM module it compiled (context, IR, sources):
~40 MB of heap the probe never needs again once every program is loaded and every
map is open. The module also owns the map descriptors, so each table is opened first
and its descriptor duplicated; bcc's Table objects then keep working on the copies
(lookups, updates, iteration use only the descriptor). Afterwards the BPF object can
neither compile, load a new function nor open a table not opened here: both say so.
"""
from __future__ import annotations

import ctypes
import os

from shared import log
from shared.heap import trim_heap

_log = log.get("probe.compiler_state")


class CompilerGone(RuntimeError):
    """bcc's module was freed (free_compiler_state): nothing more can be loaded."""


def _gone(*_a, **_k):
    raise CompilerGone("the probe's BPF compiler state was freed after loading: nothing more can be loaded")


def free_compiler_state(bpf) -> list[int]:
    """Open every table of `bpf`, point it at a duplicate of its map descriptor, then free
    bcc's module. Returns the duplicated descriptors (close them when the probe stops)."""
    from bcc.libbcc import lib
    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    names = [lib.bpf_table_name(bpf.module, i) for i in range(lib.bpf_num_tables(bpf.module))]
    dups = []
    try:
        for name in names:
            try:
                table = bpf[name]
            except Exception as e:  # noqa: BLE001 - a layout bcc cannot wrap (kernel-only scratch maps)
                _log.debug("table %s not opened from Python (%s): kernel-only from now on", name.decode(), e)
                continue
            fd = os.dup(table.map_fd)
            dups.append(fd)
            table.map_fd = fd
    except BaseException:
        for fd in dups:
            os.close(fd)
        raise
    lib.bpf_module_destroy(bpf.module)
    bpf.module = None
    bpf.load_func = bpf.get_table = _gone  # would dereference the freed module
    trim_heap()
    return dups
