"""Bearer-token authentication for /api routes."""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from aiohttp import web

from shared import log
from shared.config import ConfigError

_log = log.get("api.auth")


PLACEHOLDER_WORDS = ("change", "replace", "example", "placeholder", "secret", "password", "token", "xxxx")
MIN_TOKEN_LEN = 16


def token_problem(token: str) -> str | None:
    """Why `token` is not a real secret (too short, a placeholder, too few distinct characters), or None."""
    if len(token) < MIN_TOKEN_LEN:
        return f"shorter than {MIN_TOKEN_LEN} characters"
    low = token.lower()
    word = next((w for w in PLACEHOLDER_WORDS if w in low), None)
    if word:
        return f"looks like a placeholder (contains {word!r}); use e.g. `openssl rand -base64 32`"
    if len(set(token)) < 8:
        return "fewer than 8 distinct characters; use e.g. `openssl rand -base64 32`"
    return None


def load_or_create_token(path: Path) -> str:
    """The token in `path`; created (mode 0600) with a random value on first start.
    A placeholder or weak token is refused (ConfigError naming the file)."""
    path = Path(path)
    try:
        token = path.read_text().strip()
        if token:
            why = token_problem(token)
            if why:
                raise ConfigError(f"api token in {path}: {why}")
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    _log.info("created API token file %s", path)
    return token


def presented_token(request: web.Request, allow_query: bool) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    if allow_query:
        return request.query.get("token")
    return None


def check(request: web.Request, token: str, allow_query: bool = False) -> str | None:
    """Why the request is not authorized, or None when it is."""
    header = request.headers.get("Authorization", "")
    if header and not header.lower().startswith("bearer "):
        return "Authorization header is not 'Bearer <token>'"
    got = presented_token(request, allow_query)
    if not got:
        where = "an 'Authorization: Bearer <token>' header or ?token=" if allow_query \
            else "an 'Authorization: Bearer <token>' header"
        return f"missing token: send {where}"
    if not hmac.compare_digest(got.encode(), token.encode()):
        return "invalid token"
    return None


def unauthorized(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="eunomia"'})
