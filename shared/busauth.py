"""Who may do what on the bus: one NATS user per service identity.

Each identity has a password (random, generated once, kept in a 0600 file in
a 0700 directory) and subject permissions, which nats-server enforces. The
server config holds only bcrypt hashes. Anonymous connections are refused.

Identities (`users()`), and what each may do (`permissions()`):
- probe-<node>: publish the node's raw events and its own stats, ask the
  alerter for the filter plan; receive its node's control subject and the plan
  broadcast.
- enricher-<node>: receive the node's raw events and control subject; publish
  the node's enriched (and partitioned) events and its stats.
- alerter: receive enriched events, publish alerts and the plan broadcast.
- store: consume the EVENTS/ALERTS streams, answer store queries.
- api: ask store queries, receive alerts and stats.
- admin: everything (stream management, control ops); the root CLI and the
  supervisor of `eunomia up`.
- route: nats-server to nats-server (cluster routes), never a client.

Every identity gets its own reply inbox (`_INBOX.<user>.>`): nobody can read
the replies to another identity's requests (store query results, acks).
"""
from __future__ import annotations

import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import subjects
from .config import ConfigError

ADMIN, API, STORE, ALERTER, ROUTE = "admin", "api", "store", "alerter", "route"
NODE_ROLES = ("probe", "enricher")
SERVICE_USERS = {"alerter": ALERTER, "store": STORE, "api": API, "supervisor": ADMIN}
CREDS_ENV = "EUNOMIA_NATS_CREDS"       # directory of credential files
SYSTEMD_CREDS_ENV = "CREDENTIALS_DIRECTORY"   # systemd LoadCredential=
SYSTEM_CREDS_DIR = Path("/etc/eunomia/bus")    # `eunomia bus init --creds-dir` of deploy/systemd
P = subjects.PREFIX
JS = "$JS.API"


@dataclass(frozen=True)
class Credential:
    user: str
    password: str

    @property
    def inbox(self) -> str:
        return inbox_prefix(self.user)


def inbox_prefix(user: str) -> str:
    return f"_INBOX.{user}"


def user_for(role: str, node: str) -> str:
    """The NATS user of a service (`probe`, `enricher` are per node)."""
    if role in NODE_ROLES:
        return f"{role}-{node}"
    if role in SERVICE_USERS:
        return SERVICE_USERS[role]
    if role in (ADMIN, ROUTE):
        return role
    raise ConfigError(f"no bus identity for {role!r}")


def users(nodes: list[str]) -> list[str]:
    """Every identity of a deployment with these nodes."""
    return [ADMIN, API, STORE, ALERTER, ROUTE] + [f"{r}-{n}" for n in nodes for r in NODE_ROLES]


def _stream_api(streams: tuple[str, ...] = ("EVENTS", "ALERTS")) -> list[str]:
    """What a stream consumer needs of the JetStream API (never delete or purge)."""
    out = [f"{JS}.INFO", f"{JS}.STREAM.NAMES", "$JS.ACK.>"]
    for s in streams:
        out += [f"{JS}.STREAM.INFO.{s}", f"{JS}.STREAM.CREATE.{s}", f"{JS}.STREAM.UPDATE.{s}",
                f"{JS}.CONSUMER.CREATE.{s}", f"{JS}.CONSUMER.CREATE.{s}.>", f"{JS}.CONSUMER.DURABLE.CREATE.{s}.>",
                f"{JS}.CONSUMER.INFO.{s}.>", f"{JS}.CONSUMER.MSG.NEXT.{s}.>"]
    return out


def permissions(user: str) -> dict[str, Any] | None:
    """{"publish": [...], "subscribe": [...]} allowed subjects; None = everything (admin)."""
    inbox = f"{inbox_prefix(user)}.>"
    js_pub = [f"{JS}.INFO", f"{JS}.STREAM.NAMES"]  # durable publishing looks up the capturing stream
    if user == ADMIN:
        return None
    if user.startswith("probe-"):
        n = user[len("probe-"):]
        return {"publish": [subjects.raw(n), subjects.stats("probe", n), subjects.perf(n), subjects.CTL_ALERTER],
                "subscribe": [subjects.ctl_probe(n), subjects.ctl_perf(n), subjects.CTL_PROBES, inbox]}
    if user.startswith("enricher-"):
        n = user[len("enricher-"):]
        return {"publish": [f"{P}.event.{n}.>", f"{P}.pevent.*.{n}.*", f"{P}.pevent.*.*.{n}.*",
                            subjects.stats("enricher", n), *js_pub],
                "subscribe": [subjects.raw(n), subjects.ctl_enricher(n), inbox]}
    if user == ALERTER:
        return {"publish": [subjects.ALERT_ALL, subjects.CTL_PROBES, f"{P}.stats.alerter.*", *js_pub],
                "subscribe": [subjects.EVENT_ALL, f"{P}.pevent.>", subjects.CTL_ALERTER, inbox]}
    if user == STORE:
        return {"publish": [f"{P}.stats.store.*", *_stream_api()],
                "subscribe": [f"{P}.store.>", inbox]}
    if user == API:
        return {"publish": [f"{P}.store.>", f"{P}.stats.api.*", f"{P}.ctl.perf.*"],
                "subscribe": [subjects.ALERT_ALL, subjects.STATS_ALL, subjects.PERF_ALL, inbox]}
    if user == ROUTE:
        return {"publish": [], "subscribe": []}  # routes authenticate in the cluster block only
    raise ConfigError(f"unknown bus identity {user!r}")


# ---- credential files -------------------------------------------------------------


def creds_dir(data_dir: Path) -> Path:
    """Where credentials live: $EUNOMIA_NATS_CREDS, systemd's $CREDENTIALS_DIRECTORY, or <data>/bus."""
    env = os.environ.get(CREDS_ENV) or os.environ.get(SYSTEMD_CREDS_ENV)
    return Path(env) if env else Path(data_dir) / "bus"


def _cred_file(directory: Path, user: str) -> Path:
    return Path(directory) / f"nats-{user}"


def ensure(directory: Path, names: list[str]) -> dict[str, Credential]:
    """Load or create (0600, in a 0700 dir) one password per identity."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    out = {}
    for user in names:
        f = _cred_file(directory, user)
        try:
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        cred = load(directory, user)
        if cred is not None:  # unreadable right after writing: the caller finds it missing
            out[user] = cred
    return out


def load(directory: Path, user: str) -> Credential | None:
    f = _cred_file(directory, user)
    try:
        pw = f.read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None
    if len(pw) < 16:
        raise ConfigError(f"{f}: bus password shorter than 16 characters")
    return Credential(user, pw)


def for_role(data_dir: Path, role: str, node: str) -> Credential | None:
    """The credential a service or CLI command uses (its creds_dir, else the system-wide
    /etc/eunomia/bus of a systemd install); None (anonymous) where none is stored."""
    user = user_for(role, node)
    return load(creds_dir(data_dir), user) or load(SYSTEM_CREDS_DIR, user)


# ---- connecting ---------------------------------------------------------------------


def tls_context() -> ssl.SSLContext | None:
    """Client TLS from $EUNOMIA_NATS_CA (and $EUNOMIA_NATS_CERT/$EUNOMIA_NATS_KEY for mutual TLS)."""
    ca = os.environ.get("EUNOMIA_NATS_CA")
    if not ca:
        return None
    ctx = ssl.create_default_context(cafile=ca)
    cert, key = os.environ.get("EUNOMIA_NATS_CERT"), os.environ.get("EUNOMIA_NATS_KEY")
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def connect_kwargs(cred: Credential | None) -> dict[str, Any]:
    """Keyword arguments for nats.connect: user, password, private inbox, TLS."""
    kw: dict[str, Any] = {}
    if cred is not None:
        kw.update(user=cred.user, password=cred.password, inbox_prefix=cred.inbox)
    ctx = tls_context()
    if ctx is not None:
        kw["tls"] = ctx
    return kw


def hint(common: Any, role: str) -> str:
    """What to tell a user whose connection failed: which credential was not found, if any."""
    if for_role(common.data_dir, role, common.node) is not None:
        return ""
    user = user_for(role, common.node)
    return (f" (no bus credential nats-{user} readable in {creds_dir(common.data_dir)} or {SYSTEM_CREDS_DIR}: "
            f"run as root, or set {CREDS_ENV})")


def role_kwargs(common: Any, role: str) -> dict[str, Any]:
    """connect_kwargs for a service or CLI role of `common` (a CommonConfig)."""
    return connect_kwargs(for_role(common.data_dir, role, common.node))


# ---- server side ---------------------------------------------------------------------


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bcrypt_hash(password: str) -> str:
    import bcrypt
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()


def server_authorization(creds: dict[str, Credential]) -> str:
    """nats.conf `authorization` block: every identity but `route`, bcrypt hashes only."""
    lines = ["authorization {", "  users = ["]
    for user, c in creds.items():
        if user == ROUTE:
            continue
        perms = permissions(user)
        entry = f"    {{user: {_q(user)}, password: {_q(bcrypt_hash(c.password))}"
        if perms is not None:
            pub = ", ".join(_q(s) for s in perms["publish"])
            sub = ", ".join(_q(s) for s in perms["subscribe"])
            entry += (f", permissions: {{publish: {{allow: [{pub}]}}, subscribe: {{allow: [{sub}]}}, "
                      f"allow_responses: true}}")
        lines.append(entry + "}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def route_url(host_port: str, cred: Credential | None) -> str:
    """nats-route://user:pass@host:port for the cluster block's routes."""
    if cred is None:
        return f"nats-route://{host_port}"
    from urllib.parse import quote
    return f"nats-route://{quote(cred.user)}:{quote(cred.password, safe='')}@{host_port}"
