"""Read a BPF ring buffer map straight from its mmap'ed pages.

bcc's reader calls into Python once per record (a ctypes callback); reading
the shared pages ourselves hands out whole runs of records per wakeup and
costs a fraction of that. The layout is the kernel's (and libbpf's):

    page 0 (rw): consumer position       page 1 (ro): producer position
    then the data area, mapped twice in a row so a record never wraps;
    each record: u32 len (bit 31 busy, bit 30 discarded), u32 pg_off, data,
    padded to 8 bytes.
"""
from __future__ import annotations

import mmap
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingReader:
    """Consumer side of one BPF_MAP_TYPE_RINGBUF of `size` data bytes."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self._cons = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                               offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                               offset=page)
        self._view = memoryview(self._prod)
        self._data_off = page
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN)

    def wait(self, timeout_s: float) -> None:
        """Sleep until the kernel wakes us (or the timeout)."""
        self._ep.poll(timeout_s)

    def drain(self, limit: int = 1 << 30) -> list[bytes]:
        """Copy out every committed record (up to `limit`) and release their space."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        view, base, mask = self._view, self._data_off, self.mask
        out = []
        while cons < prod and len(out) < limit:
            at = base + (cons & mask)
            hdr = _U32.unpack_from(view, at)[0]
            if hdr & BUSY:
                break  # reserved but not yet submitted: stop here, records are in order
            n = hdr & ~(BUSY | DISCARD)
            if not hdr & DISCARD:
                out.append(bytes(view[at + HDR:at + HDR + n]))
            cons += (n + HDR + 7) & ~7
        _U64.pack_into(self._cons, 0, cons)
        return out

    def close(self) -> None:
        self._ep.close()
        self._view.release()
        self._prod.close()
        self._cons.close()
