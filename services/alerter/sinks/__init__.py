"""Where alerts go. Each sink has its own bounded queue and worker task, so
a slow or failing sink never blocks rule evaluation: when its queue is
full, `offer` drops the alert and counts it (alerter_sink_dropped_total
{sink, reason="queue_full"}); delivery failures are counted per sink too.
"""
from __future__ import annotations

from .base import Sink
from .file import FileSink
from .nats import NatsSink
from .stdout import StdoutSink
from .webhook import WebhookSink

__all__ = ["Sink", "NatsSink", "StdoutSink", "FileSink", "WebhookSink"]
