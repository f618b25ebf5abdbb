"""Every NATS subject Eunomia uses, in one place."""

PREFIX = "eunomia"


def raw(node: str) -> str:
    """Probe output: every raw kernel event of one node, in the kernel's order
    (one subject, so an exec always comes before the opens of its program)."""
    return f"{PREFIX}.raw.{node}"


def event(node: str, kind: str) -> str:
    """Enricher output: enriched events."""
    return f"{PREFIX}.event.{node}.{kind}"


EVENT_ALL = f"{PREFIX}.event.>"


def alert(priority: str) -> str:
    return f"{PREFIX}.alert.{priority.lower()}"


ALERT_ALL = f"{PREFIX}.alert.>"


def ctl_probe(node: str) -> str:
    """Request/reply control of one node's probe."""
    return f"{PREFIX}.ctl.probe.{node}"


def ctl_perf(node: str) -> str:
    """Read-only performance requests (figures, CPU profiles) to one node's probe: the api may
    send these, not the probe's other control ops (which steer what it traces)."""
    return f"{PREFIX}.ctl.perf.{node}"


# Broadcast to every probe: the filter plan compiled from the alerter's rules.
CTL_PROBES = f"{PREFIX}.ctl.probes"


def ctl_enricher(node: str) -> str:
    return f"{PREFIX}.ctl.enricher.{node}"


def stats(service: str, node: str) -> str:
    """Periodic counters and heartbeats of one service instance."""
    return f"{PREFIX}.stats.{service}.{node}"


STATS_ALL = f"{PREFIX}.stats.>"


def store(op: str) -> str:
    """Store queries (request/reply), e.g. store('events')."""
    return f"{PREFIX}.store.{op}"


def valid_token(token: str) -> bool:
    """A single subject token: non-empty, no wildcards, dots or whitespace."""
    return bool(token) and not any(c in token for c in ".*> \t\r\n")


CTL_ALERTER = f"{PREFIX}.ctl.alerter"  # request/reply to every alerter replica (first reply wins)


def perf(node: str) -> str:
    """Per-container performance figures (histograms, counters, rates) of one node's probe."""
    return f"{PREFIX}.perf.{node}"


PERF_ALL = f"{PREFIX}.perf.>"
