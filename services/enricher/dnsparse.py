"""A small, defensive DNS message parser (RFC 1035) for what the probe copies.

Input is whatever a process sent to or received from port 53: possibly
truncated (the probe copies at most 512 bytes), possibly hostile. Every
read is bounds-checked, compression pointers may only point backwards and
are followed at most MAX_JUMPS times, names are capped at 255 bytes; any
violation raises DnsError with a short reason (counted by the caller).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MAX_JUMPS = 32
MAX_NAME = 255
MAX_RECORDS = 64          # answers decoded per message; the rest are counted, not decoded
TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
         41: "OPT", 65: "HTTPS", 64: "SVCB", 255: "ANY", 257: "CAA", 10: "NULL"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


class DnsError(ValueError):
    """Not a DNS message we can read; str() is a short reason usable as a metric label."""


@dataclass
class Record:
    name: str
    type: str
    ttl: int
    data: str | None       # address (A/AAAA), name (CNAME/PTR/NS), else None


@dataclass
class Message:
    txid: int
    response: bool
    rcode: str
    qname: str | None
    qtype: str | None
    answers: list[Record] = field(default_factory=list)
    incomplete: bool = False   # the copy ended before the message did


def type_name(t: int) -> str:
    return TYPES.get(t, f"TYPE{t}")


def _name(buf: bytes, off: int) -> tuple[str, int]:
    """(dotted name, offset after it in the original position)."""
    labels: list[str] = []
    end = -1
    jumps = total = 0
    while True:
        if off >= len(buf):
            raise DnsError("name_out_of_bounds")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf):
                raise DnsError("name_out_of_bounds")
            target = ((n & 0x3F) << 8) | buf[off + 1]
            if end < 0:
                end = off + 2
            if target >= off or jumps >= MAX_JUMPS:
                raise DnsError("bad_compression_pointer")
            jumps += 1
            off = target
            continue
        if n & 0xC0:
            raise DnsError("bad_label_type")
        if n == 0:
            return ".".join(labels), (end if end >= 0 else off + 1)
        if off + 1 + n > len(buf):
            raise DnsError("name_out_of_bounds")
        total += n + 1
        if total > MAX_NAME:
            raise DnsError("name_too_long")
        labels.append(buf[off + 1:off + 1 + n].decode("ascii", "backslashreplace"))
        off += 1 + n


def _u16(buf: bytes, off: int) -> int:
    if off + 2 > len(buf):
        raise DnsError("short_record")
    return (buf[off] << 8) | buf[off + 1]


def parse(buf: bytes, tcp: bool = False, complete: bool = True) -> Message:
    """Parse one message; `tcp` strips the 2-byte length prefix; `complete` False when the copy was cut."""
    if tcp:
        if len(buf) < 2:
            raise DnsError("short_tcp_prefix")
        buf = buf[2:]
    if len(buf) < 12:
        raise DnsError("short_header")
    txid, flags = _u16(buf, 0), _u16(buf, 2)
    qd, an = _u16(buf, 4), _u16(buf, 6)
    response = bool(flags & 0x8000)
    if flags & 0x7800:  # opcode other than QUERY (0): NOTIFY, UPDATE, ... not name lookups
        raise DnsError("not_a_query_opcode")
    if qd != 1:
        raise DnsError("question_count")  # every real resolver asks one question per message
    msg = Message(txid, response, RCODES.get(flags & 0xF, str(flags & 0xF)), None, None)
    try:
        qname, off = _name(buf, 12)
        msg.qname, msg.qtype = qname.lower(), type_name(_u16(buf, off))
        _u16(buf, off + 2)  # class
        off += 4
        if not response:
            return msg
        for _ in range(min(an, MAX_RECORDS)):
            rname, off = _name(buf, off)
            rtype, ttl_hi, ttl_lo, rdlen = _u16(buf, off), _u16(buf, off + 4), _u16(buf, off + 6), _u16(buf, off + 8)
            off += 10
            if off + rdlen > len(buf):
                raise DnsError("short_record")
            rdata = buf[off:off + rdlen]
            data: str | None = None
            if rtype == 1 and rdlen == 4:
                data = str(ipaddress.IPv4Address(rdata))
            elif rtype == 28 and rdlen == 16:
                data = str(ipaddress.IPv6Address(rdata))
            elif rtype in (1, 28):
                raise DnsError("bad_address_length")
            elif rtype in (2, 5, 12):
                data = _name(buf, off)[0].lower()
            msg.answers.append(Record(rname.lower(), type_name(rtype), (ttl_hi << 16) | ttl_lo, data))
            off += rdlen
    except DnsError:
        if complete:
            raise
        msg.incomplete = True  # what was read before the cut stands
    return msg
