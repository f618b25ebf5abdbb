"""Build DNS messages for tests (queries, answers) and a tiny UDP responder.

The responder answers A queries for the names it is given and NXDOMAIN
otherwise; run it in a network namespace (`python3 -m tests.dnswire ADDR
NAME=IP ...` under `nsenter -n`) or in-process (`Responder`).
"""
from __future__ import annotations

import socket
import struct
import sys
import threading


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(name: str, qtype: int = 1, txid: int = 0x1234) -> bytes:
    return struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", qtype, 1)


def answer(q: bytes, addrs: list[str], rcode: int = 0, ttl: int = 300, cname: str | None = None) -> bytes:
    """The answer to query `q`: optional CNAME, then A/AAAA records (compressed names)."""
    txid = struct.unpack(">H", q[:2])[0]
    qend = 12
    while q[qend]:
        qend += q[qend] + 1
    question = q[12:qend + 5]
    records, owner = b"", b"\xc0\x0c"
    if cname:
        target = encode_name(cname)
        records += owner + struct.pack(">HHIH", 5, 1, ttl, len(target)) + target
        owner = struct.pack(">H", 0xC000 | (12 + len(question) + 12))  # the CNAME's rdata
    for a in addrs:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        raw = socket.inet_pton(fam, a)
        records += owner + struct.pack(">HHIH", 28 if fam == socket.AF_INET6 else 1, 1, ttl, len(raw)) + raw
    n = len(addrs) + (1 if cname else 0)
    return struct.pack(">HHHHHH", txid, 0x8180 | rcode, 1, n, 0, 0) + question + records


def qname_of(q: bytes) -> tuple[str, int]:
    labels, off = [], 12
    while q[off]:
        labels.append(q[off + 1:off + 1 + q[off]].decode())
        off += q[off] + 1
    return ".".join(labels), struct.unpack(">H", q[off + 1:off + 3])[0]


def respond(sock: socket.socket, table: dict[str, str]) -> None:
    """Answer queries on `sock` until it is closed."""
    while True:
        try:
            q, peer = sock.recvfrom(4096)
        except OSError:
            return
        try:
            name, qtype = qname_of(q)
        except (IndexError, UnicodeDecodeError, struct.error):
            continue
        ip = table.get(name.lower())
        if ip is None:
            sock.sendto(answer(q, [], rcode=3), peer)
        elif qtype == 1:
            sock.sendto(answer(q, [ip], ttl=600), peer)
        else:
            sock.sendto(answer(q, []), peer)  # no AAAA: NOERROR, empty


class Responder:
    """In-process UDP responder on (addr, 53) in a thread."""

    def __init__(self, addr: str, table: dict[str, str]) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 53))
        self.thread = threading.Thread(target=respond, args=(self.sock, table), daemon=True)

    def __enter__(self) -> "Responder":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()  # recvfrom fails: the thread ends
        self.thread.join(5)


if __name__ == "__main__":  # python3 tests/dnswire.py ADDR NAME=IP ... [--tcp-listen ADDR:PORT]
    args = sys.argv[1:]
    listen = None
    if "--tcp-listen" in args:
        i = args.index("--tcp-listen")
        host, _, port = args[i + 1].rpartition(":")
        listen = socket.socket()
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listen.bind((host, int(port)))
        listen.listen(16)
        del args[i:i + 2]

        def accept_loop() -> None:
            while True:
                c, _ = listen.accept()
                c.close()
        threading.Thread(target=accept_loop, daemon=True).start()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args[0], 53))
    print("ready", flush=True)
    respond(s, dict(a.split("=", 1) for a in args[1:]))
