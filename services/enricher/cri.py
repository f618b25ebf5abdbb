"""Container and pod metadata from the node's CRI runtime (containerd, CRI-O) over gRPC.

Per container: ContainerStatus (verbose: the runtime's info names the pod
sandbox and says whether the container is privileged), then PodSandboxStatus
of its sandbox (pod name, namespace, uid, labels, annotations, host
namespaces; cached per sandbox). A sandbox's own (pause) container is
answered from PodSandboxStatus. Runtime events come from GetContainerEvents
where the runtime has it (containerd >= 1.7, CRI-O >= 1.26); otherwise
ListContainers is polled so new containers are looked up before they are
asked for. Either way the enricher also asks on first sight of a cgroup.
Stubs: cri_proto (generated at build time from runtime_v1.proto).
"""
from __future__ import annotations

import asyncio
import time

import orjson

from shared import log
from shared.bounded import Bounded
from shared.stats import Stats

from .k8s import K8S_CONTAINER, k8s_view, pod_labels
from .lookups import LOOKUP_BACKGROUND_S, CachedLookups, ContainerInfo, LookupFailed, Mount

_log = log.get("enricher.cri")


class _NoRpcError(Exception):
    """Stands for grpc's AioRpcError until grpc is loaded (never raised)."""


# grpc and the stubs (cri_proto, generated at build time) are imported on first use, when a
# CRI socket exists: ~20 MB of RSS a node without a CRI runtime does not pay.
grpc = pb = pb_grpc = None
RpcError: type[Exception] = _NoRpcError
STUBS_ERROR: str | None = None


def load_grpc() -> bool:
    """Import grpc and the CRI stubs once; False (STUBS_ERROR says why) when they are missing."""
    global grpc, pb, pb_grpc, RpcError, STUBS_ERROR
    if pb_grpc is not None:
        return True
    if STUBS_ERROR is not None:
        return False
    try:
        import grpc as grpc_mod

        from .cri_proto import runtime_v1_pb2, runtime_v1_pb2_grpc
    except ImportError as e:  # not generated: the enricher runs on without the CRI
        STUBS_ERROR = (f"CRI stubs not generated ({e}): run `python -m services.enricher.cri_proto.gen` "
                       "(deploy/bootstrap.sh does)")
        _log.warning("%s", STUBS_ERROR)
        return False
    grpc, pb, pb_grpc, RpcError = grpc_mod, runtime_v1_pb2, runtime_v1_pb2_grpc, grpc_mod.aio.AioRpcError
    return True

NODE = 2   # runtime.v1.NamespaceMode.NODE
RETRY_S = 2.0
SANDBOX_NAME = "POD"   # name given to a pod's sandbox (pause) container, as the kubelet's dockershim did


def rpc_reason(e: grpc.aio.AioRpcError) -> str:
    code = e.code()
    return {grpc.StatusCode.NOT_FOUND: "not_found", grpc.StatusCode.UNAVAILABLE: "unreachable",
            grpc.StatusCode.DEADLINE_EXCEEDED: "timeout", grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
            }.get(code, f"rpc_{code.name.lower()}")


def _digest(ref: str) -> str | None:
    """sha256:... out of "repo@sha256:..."."""
    return ref.split("@", 1)[1] if "@" in ref else None


def _privileged(info: dict) -> bool | None:
    """From ContainerStatus verbose info: containerd puts the CRI config there, CRI-O a flag."""
    if isinstance(info.get("privileged"), bool):                                   # CRI-O
        return info["privileged"]
    cfg = info.get("config")
    if isinstance(cfg, dict):                                                      # containerd
        sc = ((cfg.get("linux") or {}).get("security_context") or {})
        return bool(sc.get("privileged", False)) if isinstance(sc, dict) else None
    return None


def _host_pid(info: dict) -> bool | None:
    cfg = info.get("config")
    if isinstance(cfg, dict):
        ns = (((cfg.get("linux") or {}).get("security_context") or {}).get("namespace_options") or {})
        if isinstance(ns, dict):
            return ns.get("pid") == NODE
    return None


class CriClient(CachedLookups):
    source = "cri"

    def __init__(self, sockets: tuple[str, ...], timeout: float = 1.0, ttl: float = 60.0,
                 negative_ttl: float = 5.0, max_entries: int = 4096, stats: Stats | None = None,
                 poll_s: float = 5.0) -> None:
        super().__init__(sockets, timeout, ttl, negative_ttl, max_entries, stats)
        self.poll_s = poll_s
        # a batch waits `timeout` for lookups; the lookup itself goes on in the background a little
        # longer (a loaded runtime answers late rather than never), then counts a timeout
        self.rpc_timeout = max(timeout, LOOKUP_BACKGROUND_S)
        self._channel: grpc.aio.Channel | None = None
        self._channel_sock: str | None = None
        self._stub = None
        self._pods: Bounded[str, tuple[float, dict]] = Bounded(max_entries)   # sandbox id -> (expires, pod)
        self.runtime_name: str | None = None       # from Version, once connected
        self.events_supported: bool | None = None  # GetContainerEvents answered / unimplemented

    def describe(self) -> str:
        return f"CRI runtime at {' or '.join(self.sockets)}"

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = self._channel_sock = None

    async def _get_stub(self):
        sock = self.socket()
        if sock is None:
            raise LookupFailed("socket_missing")
        if not load_grpc():
            raise LookupFailed("no_stubs")
        if self._stub is None or self._channel_sock != sock:
            await self.close()
            self._channel = grpc.aio.insecure_channel(f"unix://{sock}")
            self._stub = pb_grpc.RuntimeServiceStub(self._channel)
            self._channel_sock = sock
            try:
                v = await self._stub.Version(pb.VersionRequest(version="v1"), timeout=self.rpc_timeout)
                self.runtime_name = v.runtime_name
                _log.info("CRI runtime %s %s (API %s) at %s", v.runtime_name, v.runtime_version,
                          v.runtime_api_version, sock)
            except RpcError as e:
                await self.close()
                raise LookupFailed(rpc_reason(e)) from None
        return self._stub

    # --- lookups -------------------------------------------------------------
    async def inspect(self, cid: str) -> ContainerInfo:
        stub = await self._get_stub()
        try:
            r = await stub.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True),
                                           timeout=self.rpc_timeout)
        except RpcError as e:
            reason = rpc_reason(e)
            if reason == "not_found":
                return await self._sandbox_container(stub, cid)
            if reason == "unreachable":
                await self.close()
            raise LookupFailed(reason) from None
        st = r.status
        try:
            info = orjson.loads(r.info.get("info") or "{}")
        except orjson.JSONDecodeError:
            info = {}
        info = info if isinstance(info, dict) else {}
        sandbox_id = info.get("sandboxID") or info.get("sandboxId")
        if not isinstance(sandbox_id, str) or not sandbox_id:
            sandbox_id = await self._sandbox_of(stub, cid)
        pod = await self._pod(stub, sandbox_id) if sandbox_id else None
        image = st.image.user_specified_image if st.image.image.startswith("sha256:") and \
            st.image.user_specified_image else st.image.image
        image_id = st.image_id or (st.image_ref if st.image_ref.startswith("sha256:") else None)
        host_pid = _host_pid(info)
        labels = dict(st.labels)
        return ContainerInfo(
            id=st.id or cid, name=st.metadata.name or labels.get(K8S_CONTAINER, ""), image=image,
            labels=labels, image_digest=_digest(st.image_ref), image_id=image_id or None,
            privileged=_privileged(info),
            host_network=pod["host_network"] if pod else None,
            host_pid=host_pid if host_pid is not None else (pod["host_pid"] if pod else None),
            host_ipc=pod["host_ipc"] if pod else None,
            mounts=tuple(Mount.of(m.host_path, m.container_path, not m.readonly) for m in st.mounts),
            k8s=self._k8s(pod, st.metadata.name) if pod else None)

    async def _sandbox_of(self, stub, cid: str) -> str | None:
        try:
            r = await stub.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(id=cid)),
                                          timeout=self.rpc_timeout)
        except RpcError:
            return None
        return r.containers[0].pod_sandbox_id if r.containers else None

    async def _pod(self, stub, sandbox_id: str, must: bool = False) -> dict | None:
        hit = self._pods.get(sandbox_id)
        if hit is not None and hit[0] >= time.monotonic():
            return hit[1]
        try:
            r = await stub.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                                            timeout=self.rpc_timeout)
        except RpcError as e:
            if must:
                raise LookupFailed(rpc_reason(e)) from None
            if self.stats is not None:
                self.stats.inc("enricher_lookup_failures_total", source="cri_sandbox", reason=rpc_reason(e))
            return hit[1] if hit else None
        s = r.status
        ns = s.linux.namespaces.options
        pod = {"sandbox_id": s.id or sandbox_id, "name": s.metadata.name, "namespace": s.metadata.namespace,
               "uid": s.metadata.uid, "labels": pod_labels(dict(s.labels)), "annotations": dict(s.annotations),
               "host_network": ns.network == NODE, "host_pid": ns.pid == NODE, "host_ipc": ns.ipc == NODE}
        self._pods[sandbox_id] = (time.monotonic() + self.ttl, pod)
        return pod

    @staticmethod
    def _k8s(pod: dict, container: str | None) -> dict | None:
        return k8s_view(pod["name"], pod["namespace"], pod["uid"], container, pod["labels"], pod["annotations"])

    async def _sandbox_container(self, stub, cid: str) -> ContainerInfo:
        """A pod's sandbox (pause) container is no CRI container: its id is the sandbox's."""
        pod = await self._pod(stub, cid, must=True)   # not a sandbox either: LookupFailed("not_found")
        return ContainerInfo(id=cid, name=SANDBOX_NAME, image="", labels={},
                             host_network=pod["host_network"], host_pid=pod["host_pid"], host_ipc=pod["host_ipc"],
                             k8s=self._k8s(pod, None))

    # --- runtime events --------------------------------------------------------
    async def watch(self) -> None:
        """GetContainerEvents where the runtime has it, else poll ListContainers. Until cancelled."""
        logged = False
        while True:
            if self.socket() is None:   # no CRI runtime on this node (yet): nothing to follow
                await asyncio.sleep(RETRY_S)
                continue
            try:
                stub = await self._get_stub()
                if self.events_supported is not False:
                    async for ev in stub.GetContainerEvents(pb.GetEventsRequest()):
                        if self.events_supported is None:
                            _log.info("following CRI container events at %s", self._channel_sock)
                        self.events_supported = True
                        self._on_event(ev)
                else:
                    await self._poll(stub)
                    await asyncio.sleep(self.poll_s)
                    continue
            except asyncio.CancelledError:
                raise
            except RpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    _log.info("CRI runtime %s has no GetContainerEvents: polling ListContainers every %g s",
                              self.runtime_name or "?", self.poll_s)
                    self.events_supported = False
                    continue
                if not logged:
                    _log.warning("CRI events at %s: %s; retrying every %g s", self._channel_sock,
                                 rpc_reason(e), RETRY_S)
                    logged = True
                await self.close()
            except LookupFailed as e:
                if not logged:
                    _log.warning("CRI events: %s (%s); retrying every %g s", self.describe(), e, RETRY_S)
                    logged = True
            await asyncio.sleep(RETRY_S)

    def _on_event(self, ev) -> None:
        if self.stats is not None:
            self.stats.inc("enricher_runtime_events_total", source="cri")
        cid = ev.container_id
        if cid and ev.container_event_type in (0, 1) and not self.cached(cid)[0]:   # created, started
            self.start(cid)

    async def _poll(self, stub) -> None:
        try:
            r = await stub.ListContainers(pb.ListContainersRequest(), timeout=self.rpc_timeout)
        except RpcError as e:
            if self.stats is not None:
                self.stats.inc("enricher_lookup_failures_total", source="cri_poll", reason=rpc_reason(e))
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                await self.close()
            return
        if self.stats is not None:
            self.stats.inc("enricher_cri_polls_total")
        for c in r.containers:
            if c.id and not self.cached(c.id)[0] and c.id not in self._inflight:
                self.start(c.id)
