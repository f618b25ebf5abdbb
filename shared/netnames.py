"""Address families, socket types and IP protocols: the one set of names
the probe's decoder, the rule fields, the store and the CLI use."""
from __future__ import annotations

import socket

AF_NAMES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet"}
INET_FAMILIES = frozenset((socket.AF_INET, socket.AF_INET6))
# the same families as events may spell them (numbers, our names, the C names)
INET_FAMILY_SPELLINGS = frozenset((*INET_FAMILIES, "inet", "inet6", "AF_INET", "AF_INET6"))
SOCK_TYPE_PROTO = {1: "tcp", 2: "udp", 3: "raw"}      # SOCK_STREAM, SOCK_DGRAM, SOCK_RAW (low 4 bits of the type)
IP_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp", 132: "sctp"}


def ip_text(family: int, raw: bytes) -> str | None:
    """The printable address of an inet family from its raw bytes (first 4 or 16), else None."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return None


def sock_proto(family: int, sock_type: int) -> str | None:
    """"tcp"/"udp"/"raw" for an inet socket of this type, else None."""
    return SOCK_TYPE_PROTO.get(sock_type & 0xF) if family in INET_FAMILIES else None
