"""Generate the Python stubs of runtime_v1.proto with grpcio-tools.

    python -m services.enricher.cri_proto.gen [--check]

Run by deploy/bootstrap.sh and the Containerfile. Regenerates only when the
.proto changed (its hash is stamped in the generated module); --check exits 1
when the stubs are missing or stale, without writing.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]           # the directory holding services/
PROTO = HERE / "runtime_v1.proto"
OUT = HERE / "runtime_v1_pb2.py"
OUT_GRPC = HERE / "runtime_v1_pb2_grpc.py"
STAMP_PREFIX = "# eunomia-proto-sha256: "


def proto_hash() -> str:
    return hashlib.sha256(PROTO.read_bytes()).hexdigest()


def fresh() -> bool:
    """The generated stubs exist and were made from the current .proto."""
    try:
        with OUT.open() as f:
            first = f.readline()
    except OSError:
        return False
    return OUT_GRPC.exists() and first.strip() == (STAMP_PREFIX + proto_hash()).strip()


def generate() -> None:
    from grpc_tools import protoc  # build-time dependency (grpcio-tools)

    rel = PROTO.relative_to(ROOT)
    include = Path(protoc.__file__).parent / "_proto"   # google/protobuf/*.proto
    rc = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}",
                      f"--grpc_python_out={ROOT}", str(rel)])
    if rc != 0:
        raise SystemExit(f"protoc failed on {PROTO} (exit {rc})")
    OUT.write_text(STAMP_PREFIX + proto_hash() + "\n" + OUT.read_text())


def main(argv: list[str]) -> int:
    if "--check" in argv:
        return 0 if fresh() else 1
    if not fresh():
        generate()
        print(f"generated {OUT.name}, {OUT_GRPC.name} from {PROTO.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
