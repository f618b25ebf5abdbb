"""Reading every entry of a BPF hash map from user space."""
from __future__ import annotations


def entries(table) -> list:
    """Every (key, value) of bcc `table`: one bpf() call per batch where the kernel has batch lookup
    (5.6+; 16k entries of the dedup map in ~40 ms instead of ~100 ms), else two calls per entry."""
    try:
        return list(table.items_lookup_batch())
    except Exception:  # no batch lookup in this kernel
        return list(table.items())
