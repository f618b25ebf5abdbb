"""The one factory of events for tests: raw events as the probe publishes them
and enriched ones as the enricher does (shapes from shared/schema.py)."""
from __future__ import annotations

import itertools
import uuid

from shared.schema import new_event_id

TS = 1_764_000_000_000_000_000
_seq = itertools.count(1)


def proc_view(exe: str = "/bin/sh", args: list[str] | None = None, *, name: str | None = None, ppid: int = 1,
              pexe: str = "/sbin/init", pargs: list[str] | None = None, cwd: str = "/",
              ancestors: list[dict] | None = None) -> dict:
    """The enricher's `proc` of a process (its parent named by `pexe`/`pargs`)."""
    args = args or [exe]
    pargs = pargs or [pexe]
    pname = pexe.rsplit("/", 1)[-1]
    return {"exe": exe, "args": args, "cmdline": " ".join(args), "name": name or exe.rsplit("/", 1)[-1][:15],
            "cwd": cwd, "ppid": ppid, "pname": pname, "pexe": pexe, "pcmdline": " ".join(pargs),
            "ancestors": ancestors if ancestors is not None else []}


def container(name: str = "web-1", cid: str | None = None, *, image: str = "localhost/bb:latest",
              labels: dict | None = None) -> dict:
    return {"id": cid or uuid.uuid4().hex + uuid.uuid4().hex, "name": name, "image": image, "runtime": "podman",
            "labels": labels if labels is not None else {"app": name}}


def raw_event(kind: str, *, node: str = "n1", pid: int = 100, ppid: int = 1, comm: str = "sh",
              ts: int | None = None, cgroup_id: int | None = 1, uid: int = 0, **fields) -> dict:
    """A raw event as the probe publishes it on eunomia.raw.<node>."""
    return {"id": new_event_id(node), "ts": TS + next(_seq) * 1000 if ts is None else ts, "node": node,
            "kind": kind, "pid": pid, "tid": pid, "ppid": ppid, "uid": uid, "gid": 0, "comm": comm,
            "cgroup_id": cgroup_id, **fields}


def enriched_event(kind: str, *, ctr: dict | None = None, proc: dict | None = None, k8s: dict | None = None,
                   **kw) -> dict:
    """An enriched event as the enricher publishes it on eunomia.event.<node>.<kind>."""
    ev = raw_event(kind, **kw)
    ev["proc"] = proc or proc_view(f"/bin/{ev['comm']}", [ev["comm"]], ppid=ev["ppid"])
    ev["container"], ev["k8s"] = ctr, k8s
    return ev
