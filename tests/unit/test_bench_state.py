"""The state phase's pure helpers (bench.state): recovery figures from /readyz samples, and the delivered
table in both designs."""

from __future__ import annotations

import math

from bench.state import Readiness, delivered_table, recovery_summary
from streams.delivery.dedup import entry_key


def test_recovery_rate_is_taken_between_the_first_and_last_recovering_answers() -> None:
    readiness = Readiness()
    readiness.note(1.0, {"ready": False, "reason": "rebalancing"})
    readiness.note(
        2.0, {"ready": False, "reason": "recovering", "recovery": {"records_read": 0, "records_left": 0}}
    )
    readiness.note(
        3.0, {"ready": False, "reason": "recovering", "recovery": {"records_read": 100, "records_left": 900}}
    )
    readiness.note(
        7.0, {"ready": False, "reason": "recovering", "recovery": {"records_read": 900, "records_left": 100}}
    )
    readiness.ready_seconds = 8.0
    summary = readiness.summary()
    assert summary["recovering_seconds"] == 6.0
    assert summary["records_per_second"] == 900 / 5.0
    assert summary["records_seen"] == 1000
    assert summary["first_seen_seconds"] == {"rebalancing": 1.0, "recovering": 2.0}


def test_no_rate_without_two_recovering_answers() -> None:
    assert recovery_summary(3.0, None, None)["records_per_second"] is None
    only = (2.0, 10, 0)
    summary = recovery_summary(3.0, only, only)
    assert summary["recovering_seconds"] == 1.0
    assert summary["records_per_second"] is None
    assert math.isnan(Readiness().summary()["ready_seconds"])


def test_both_designs_hold_the_same_deliveries() -> None:
    new, old = delivered_table(history=5, others=20)
    assert len(new) == 25
    assert sum(len(ids) for ids in old.values()) == 25
    assert len(old["with-history"]) == 5
    assert new[entry_key("with-history", "ntf-old-0")] == old["with-history"]["ntf-old-0"]
    assert "new-recipient" not in old
