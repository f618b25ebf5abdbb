"""A real containerd with its CRI plugin, and a kubelet-like CRI client, for tests.

    async with ContainerdNode(tmp_path) as node:        # own root/state/socket
        kubelet = Kubelet(node.socket)
        pod = await kubelet.run_pod("web-7d4b9c8f5d-x2x9q", "shop", labels={...})
        cid = await kubelet.start_container(pod, "app", ["sh", "-c", "..."])

No registry is reachable here, so both images (the pod sandbox's "pause" and a
busybox image) are OCI archives built from busybox-static and imported with
`ctr -n k8s.io images import`. Pods use the host network (no CNI needed).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import grpc

from services.enricher.cri_proto import runtime_v1_pb2 as pb
from services.enricher.cri_proto import runtime_v1_pb2_grpc as pb_grpc

PAUSE_IMAGE = "localhost/eunomia-pause:cri"
BB_IMAGE = "localhost/eunomia-bb:cri"
NAMESPACE = "k8s.io"  # containerd namespace of the CRI plugin


def containerd_missing() -> str | None:
    for b in ("containerd", "ctr", "runc"):
        if not shutil.which(b):
            return f"{b} is not installed (deploy/bootstrap.sh installs Debian's containerd and runc)"
    return None


# ---------------------------------------------------------------- OCI images

def _rootfs_layer() -> bytes:
    """An uncompressed tar of a busybox-static root file system."""
    bb = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, mode
            t.addfile(ti)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), mode
            t.addfile(ti, io.BytesIO(data))

        dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "var", "var/log", "dev",
                "proc", "sys", "run"}
        for d in sorted(dirs):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        with open(bb, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for a in applets:
            name = a.lstrip("/")
            if name == "bin/busybox" or name.split("/")[0] not in ("bin", "sbin", "usr"):
                continue
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, "/bin/busybox", 0o777
            t.addfile(ti)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def oci_archive(name: str, layer: bytes, cmd: list[str]) -> bytes:
    """An OCI image layout tar of one layer, named `name` for containerd's import."""
    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_d, _ = blob(layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_d]},
    }, sort_keys=True).encode()
    config_d, _ = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d,
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_d, _ = blob(manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d, "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
    }]}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        def add(path: str, data: bytes) -> None:
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, data in ((layer_d, layer), (config_d, config), (manifest_d, manifest)):
            add("blobs/sha256/" + d.split(":", 1)[1], data)
    return buf.getvalue()


# ---------------------------------------------------------------- containerd

CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_tcp_service = true
  # no CAP_SYS_RESOURCE here: never ask for an oom_score_adj below containerd's own (the sandbox's -998)
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"""


class ContainerdNode:
    """containerd with the CRI plugin on its own root, state and socket (under `base`)."""

    def __init__(self, base: Path) -> None:
        # a short path: unix socket paths are limited to 108 bytes
        self.dir = Path(f"/tmp/eu-ctrd-{uuid.uuid4().hex[:8]}")
        self.base = base
        self.socket = str(self.dir / "containerd.sock")
        self.proc: subprocess.Popen | None = None
        self.log = base / "containerd.log"

    async def __aenter__(self) -> "ContainerdNode":
        self.dir.mkdir(mode=0o700)
        for sub in ("root", "state", "opt", "cni/bin", "cni/conf"):
            (self.dir / sub).mkdir(parents=True)
        conf = self.dir / "config.toml"
        conf.write_text(CONFIG.format(d=self.dir, pause=PAUSE_IMAGE))
        self.proc = subprocess.Popen(["containerd", "--config", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"), start_new_session=True)
        try:
            await self._wait_ready()
            layer = await asyncio.to_thread(_rootfs_layer)
            pause_cmd = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"]
            for name, cmd in ((PAUSE_IMAGE, pause_cmd), (BB_IMAGE, ["/bin/sh"])):
                await asyncio.to_thread(self.import_image, oci_archive(name, layer, cmd))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(f"unix://{self.socket}") as ch:
            stub = pb_grpc.RuntimeServiceStub(ch)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"containerd exited ({self.proc.returncode}): {self.log_tail()}")
                try:
                    await stub.Version(pb.VersionRequest(), timeout=2)
                    return
                except grpc.aio.AioRpcError as e:
                    if time.monotonic() > end:
                        raise RuntimeError(f"containerd CRI not ready in {timeout} s ({e.code()}): "
                                           f"{self.log_tail()}") from None
                await asyncio.sleep(0.2)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def ctr(self, *args: str, stdin: bytes | None = None) -> str:
        r = subprocess.run(["ctr", "--address", self.socket, "-n", NAMESPACE, *args], input=stdin,
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode(errors="replace")

    def import_image(self, archive: bytes) -> None:
        self.ctr("images", "import", "--snapshotter", "native", "--no-unpack=false", "-", stdin=archive)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            await asyncio.to_thread(self._cleanup_containers)
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        # shims outlive containerd: kill what is left of this node's tasks
        await asyncio.to_thread(self._kill_shims)
        await asyncio.to_thread(self._unmount_and_remove)

    def _cleanup_containers(self) -> None:
        try:
            for cid in self.ctr("tasks", "ls", "-q").split():
                subprocess.run(["ctr", "--address", self.socket, "-n", NAMESPACE, "tasks", "kill", "-s",
                                "SIGKILL", cid], capture_output=True, timeout=20)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass

    def _kill_shims(self) -> None:
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and self.socket.encode() in cmd:
                try:
                    os.kill(int(p.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _unmount_and_remove(self) -> None:
        prefix = str(self.dir) + "/"
        try:
            mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        except OSError:
            mounts = []
        for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- kubelet-like client

class Kubelet:
    """Creates pods and containers through the CRI with the kubelet's labels and annotations."""

    def __init__(self, socket: str, log_root: str) -> None:
        self.log_root = log_root   # stands in for /var/log/pods
        self.channel = grpc.aio.insecure_channel(f"unix://{socket}")
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.pods: dict[str, pb.PodSandboxConfig] = {}

    async def close(self) -> None:
        for sid in list(self.pods):
            try:
                await self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=30)
                await self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=30)
            except grpc.aio.AioRpcError:
                pass
        await self.channel.close()

    async def run_pod(self, name: str, namespace: str, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None, host_pid: bool = False,
                      privileged: bool = False) -> str:
        """A pod sandbox on the host network; `privileged` if any of its containers will be (as kubelet)."""
        uid = str(uuid.uuid4())
        meta = pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0)
        # kubelet: the pod's labels plus its own io.kubernetes.pod.* labels; the pod's annotations
        # plus kubernetes.io/config.*
        klabels = {**(labels or {}), "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                   "io.kubernetes.pod.uid": uid}
        kann = {**(annotations or {}), "kubernetes.io/config.source": "api",
                "kubernetes.io/config.seen": "2026-12-02T11:00:00.000000000Z"}
        ns = pb.NamespaceOption(network=pb.NODE, pid=pb.NODE if host_pid else pb.CONTAINER, ipc=pb.POD)
        cfg = pb.PodSandboxConfig(
            metadata=meta, hostname="", log_directory=f"{self.log_root}/{namespace}_{name}_{uid}",
            dns_config=pb.DNSConfig(), labels=klabels, annotations=kann,
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"/kubepods/besteffort/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns, privileged=privileged)))
        r = await self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=120)
        self.pods[r.pod_sandbox_id] = cfg
        return r.pod_sandbox_id

    async def create_container(self, pod_id: str, name: str, command: list[str], image: str = BB_IMAGE,
                               privileged: bool = False, mounts: tuple[tuple[str, str], ...] = ()) -> str:
        """`mounts`: (host path, container path) read-only binds."""
        sb = self.pods[pod_id]
        meta = sb.metadata
        labels = {"io.kubernetes.container.name": name, "io.kubernetes.pod.name": meta.name,
                  "io.kubernetes.pod.namespace": meta.namespace, "io.kubernetes.pod.uid": meta.uid}
        annotations = {"io.kubernetes.container.hash": "1a2b3c4d", "io.kubernetes.container.restartCount": "0",
                       "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
                       "io.kubernetes.container.terminationMessagePolicy": "File",
                       "io.kubernetes.pod.terminationGracePeriod": "30"}
        ns = sb.linux.security_context.namespace_options
        sc = pb.LinuxContainerSecurityContext(privileged=privileged, namespace_options=ns)
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0), image=pb.ImageSpec(image=image),
            command=command, labels=labels, annotations=annotations, log_path=f"{name}/0.log",
            mounts=[pb.Mount(host_path=h, container_path=c, readonly=True) for h, c in mounts],
            linux=pb.LinuxContainerConfig(security_context=sc))
        r = await self.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg,
                                                                    sandbox_config=sb), timeout=120)
        return r.container_id

    async def start(self, cid: str) -> None:
        await self.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)

    async def status(self, cid: str) -> pb.ContainerStatus:
        return (await self.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=30)).status
