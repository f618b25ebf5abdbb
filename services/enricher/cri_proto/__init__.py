"""The CRI (runtime.v1) messages Eunomia uses: runtime_v1.proto, and the stubs
generated from it at build time (runtime_v1_pb2*.py, not in git; see gen.py)."""
