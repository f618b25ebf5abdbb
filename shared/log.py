"""Logging set-up: one line per record, service name in every line."""
import logging
import os
import sys


def setup(level: str | None = None) -> None:
    level = (level or os.environ.get("EUNOMIA_LOG", "INFO")).upper()
    root = logging.getLogger()
    if root.handlers:
        root.setLevel(level)
        return
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"eunomia.{name}")
