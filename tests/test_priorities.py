"""One vocabulary of priorities: rule files, alerter config, CLI, API and store agree."""
import argparse

import pytest

from services.alerter.cli import _priority_arg
from services.alerter.config import AlerterConfig
from services.api.params import ALERT_PARAMS, BadParam, parse
from services.store.query import prio_level
from shared.config import ConfigError
from shared.priorities import PRIORITIES, at_least, normalize_priority, priority_rank, severity


def test_aliases_and_case_are_accepted_everywhere():
    for alias, canonical in (("info", "INFORMATIONAL"), ("Warn", "WARNING"), ("crit", "CRITICAL")):
        assert normalize_priority(alias) == canonical
        assert AlerterConfig(min_priority=alias).min_priority == canonical
        assert _priority_arg(alias) == canonical
        assert prio_level(alias) == severity(canonical) >= 0
    assert normalize_priority("loud") is None and normalize_priority(3) is None
    with pytest.raises(ConfigError, match="min_priority"):
        AlerterConfig(min_priority="loud")
    with pytest.raises(argparse.ArgumentTypeError):
        _priority_arg("loud")


def test_orders_agree():
    ranks = [priority_rank(p) for p in PRIORITIES]
    levels = [severity(p) for p in PRIORITIES]
    assert ranks == sorted(ranks) and levels == sorted(levels, reverse=True)
    assert at_least("ERROR", "WARNING") and not at_least("NOTICE", "WARNING") and not at_least("x", "DEBUG")
    assert prio_level("nonsense") == -1


def test_api_priority_param():
    assert parse({"priority": "info"}, ALERT_PARAMS)["priority"] == "informational"
    with pytest.raises(BadParam, match="priority"):
        parse({"priority": "loud"}, ALERT_PARAMS)
