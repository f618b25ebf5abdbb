"""Train a zstd dictionary at idle priority (run by services/store/codec.Training through
shared/background.idle_child): samples on stdin, each as a 4-byte little-endian length and
its bytes; the dictionary on stdout (nothing when zstd could not train one)."""
from __future__ import annotations

import struct
import sys

from shared.background import lower_to_idle


def frame(samples: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(s)) + s for s in samples)


def unframe(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        left = len(data) - i - 4  # bytes after this sample's length
        if left < 0 or left < (n := struct.unpack_from("<I", data, i)[0]):
            raise ValueError(f"samples cut short: the one at byte {i} of {len(data)} does not fit")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


def main() -> int:
    lower_to_idle()
    from .codec import train_samples  # after lowering: importing zstd is work too
    data = train_samples(unframe(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(data or b"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
