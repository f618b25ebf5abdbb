"""Real containers for tests: a busybox image built locally (no registry
is reachable here) and podman with runc (crun fails on hybrid cgroups)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

IMAGE = "localhost/eunomia-bb:latest"
PODMAN = ["podman", "--runtime", "runc"]
RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
PODMAN_SOCK = "/run/podman/podman.sock"


def build_busybox_image(image: str = IMAGE) -> str:
    """Build `image` from busybox-static once; return its name."""
    if subprocess.run(["podman", "image", "exists", image]).returncode == 0:
        return image
    bb = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as d:
        root = Path(d, "rootfs")
        for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "var/log", "dev/shm", "proc", "sys"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(bb, root / "bin/busybox")
        applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
        for a in applets:
            p = root / a
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                os.symlink("/bin/busybox", p)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
        (root / "etc/hostname").write_text("bb\n")
        (root / "tmp").chmod(0o1777)
        tar = Path(d, "rootfs.tar")
        with tarfile.open(tar, "w") as t:
            t.add(root, arcname=".")
        subprocess.run(["podman", "import", "--change", "CMD=/bin/sh", str(tar), image],
                       check=True, capture_output=True)
    return image


def run(args: list[str], *, name: str | None = None, image: str = IMAGE, flags: list[str] | None = None,
        timeout: float = 60, check: bool = True, labels: dict[str, str] | None = None,
        detach: bool = False) -> subprocess.CompletedProcess:
    """`podman run` a container; --rm unless detached. Returns the finished process."""
    cmd = [*PODMAN, "run", *RUN_FLAGS]
    cmd += ["-d"] if detach else ["--rm"]
    if name:
        cmd += ["--name", name]
    for k, v in (labels or {}).items():
        cmd += ["--label", f"{k}={v}"]
    cmd += (flags or []) + [image, *args]
    return run_bounded(cmd, timeout, check)


def run_bounded(cmd: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    """subprocess.run that cannot hang: podman's children (conmon) may keep the
    output pipes open after podman itself is killed, so on timeout the whole
    process group is killed and the pipes are abandoned."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = "", "(output pipes held open by a child)"
        raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


def remove(name: str) -> None:
    try:
        run_bounded([*PODMAN, "rm", "-f", "-t", "0", name], timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pass


def inspect_id(name: str) -> str:
    return run_bounded(["podman", "inspect", "-f", "{{.Id}}", name], timeout=60).stdout.strip()


def start_api_service(sock: str = PODMAN_SOCK) -> subprocess.Popen | None:
    """Start `podman system service` (Docker-compatible Engine API) on `sock`,
    unless something already answers there. Returns the process we started."""
    if _answers(sock):
        return None
    Path(sock).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.unlink(sock)
    except FileNotFoundError:
        pass
    proc = subprocess.Popen(["podman", "--runtime", "runc", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        if _answers(sock):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"podman system service did not answer on {sock}")


def _answers(sock: str) -> bool:
    import socket
    if not os.path.exists(sock):
        return False
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(2)
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        return b"OK" in s.recv(4096)
    except OSError:
        return False
    finally:
        s.close()
