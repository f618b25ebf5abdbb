"""Per-container map of resolved addresses: IP -> the name the container asked for.

Learnt from the DNS answers a container received (services/enricher/dns.py),
so a later connect, accept or kernel-aggregated flow of that container gets
`dname`. Answers live for their TTL, but at least `min_ttl_s` (a program
connects right after resolving, and flows are reported every few seconds)
and at most `max_ttl_s`. Bounded twice: `max_scopes` containers, least
recently used dropped first, and `max_names` addresses per container, oldest
dropped first; evictions are counted.
"""
from __future__ import annotations

from shared.bounded import Bounded


class NameMap:
    def __init__(self, max_scopes: int = 1024, max_names: int = 4096, min_ttl_s: float = 60.0,
                 max_ttl_s: float = 3600.0) -> None:
        self.max_scopes, self.max_names = max_scopes, max_names
        self.min_ttl_ns, self.max_ttl_ns = int(min_ttl_s * 1e9), int(max_ttl_s * 1e9)
        # scope -> addr -> (name, expires ns); learn() refreshes both
        self._scopes: Bounded[str, Bounded[str, tuple[str, int]]] = Bounded(max_scopes, self._scope_evicted)
        self.evictions = 0   # names dropped before their TTL ran out (bounds)
        self.learnt = 0

    def _scope_evicted(self, _scope: str, names: Bounded[str, tuple[str, int]]) -> None:
        self.evictions += len(names)

    def _name_evicted(self, _addr: str, _hit: tuple[str, int]) -> None:
        self.evictions += 1

    def __len__(self) -> int:
        return sum(len(s) for s in self._scopes.values())

    def learn(self, scope: str, addr: str, name: str, ttl_s: int, now_ns: int) -> None:
        names = self._scopes.touch(scope)
        if names is None:
            names = self._scopes[scope] = Bounded(self.max_names, self._name_evicted)
        ttl = min(max(int(ttl_s * 1e9), self.min_ttl_ns), self.max_ttl_ns)
        names[addr] = (name, now_ns + ttl)
        self.learnt += 1

    def lookup(self, scope: str, addr: str | None, now_ns: int) -> str | None:
        if not addr:
            return None
        names = self._scopes.get(scope)
        if not names:
            return None
        hit = names.get(addr)
        if hit is None:
            return None
        if hit[1] < now_ns:
            del names[addr]
            return None
        return hit[0]

    def scope_names(self, scope: str, now_ns: int) -> dict[str, str]:
        """{addr: name} of one container, live entries only."""
        return {a: n for a, (n, exp) in (self._scopes.get(scope) or {}).items() if exp >= now_ns}
