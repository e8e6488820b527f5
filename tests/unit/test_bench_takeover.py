"""The standby takeover's bookkeeping (bench.takeover, bench.standby): when routing resumed per partition,
what was lost or copied, and how far a worker's standbys have read, from its probe lines."""

from __future__ import annotations

import orjson
import pytest

from bench.standby import membership, one_user_per_partition
from bench.takeover import Holdings, ProbeLog, last_holdings, records_left
from bench.workload import home_partition

KILL = 100.0


def probes() -> ProbeLog:
    log = ProbeLog()
    # Partition 0 (the dead worker's): routed before the kill, one probe replayed late, new ones from 112 s.
    for seq, (at, seen) in enumerate([(98.0, [98.5]), (99.8, [111.0, 111.2]), (101.0, [111.5]), (105.0, [])]):
        log.note_produced(seq, 0, at)
        for when in seen:
            log.note_seen(seq, when)
    # Partition 1 (the survivor's): stalls from 101 s to 109 s while it rejoins.
    for seq, (at, seen) in enumerate([(99.0, 99.5), (100.5, 101.0), (102.0, 109.0)], start=10):
        log.note_produced(seq, 1, at)
        log.note_seen(seq, seen)
    return log


def test_routing_resumes_with_the_first_probe_produced_after_the_kill() -> None:
    log = probes()
    # 99.8's probe was replayed at 111.0, but it was produced before the kill: 101.0's, seen at 111.5, counts.
    assert log.resumed(KILL, [0, 1]) == {0: pytest.approx(11.5), 1: pytest.approx(1.0)}
    assert log.first_seen_after(KILL, [0]) == {0: pytest.approx(11.0)}
    assert log.last_seen_before(KILL, [0, 1]) == {0: pytest.approx(1.5), 1: pytest.approx(0.5)}
    assert log.resumed(KILL, [2]) == {2: None}


def test_losses_copies_and_stalls() -> None:
    log = probes()
    assert log.missing() == [3]
    assert log.duplicates() == 1
    assert log.duplicated() == [1]
    assert log.copies_by_partition() == {0: 1}
    assert log.copies(KILL) == [{"seq": 1, "partition": 0, "produced": -0.2, "seen": [11.0, 11.2]}]
    assert log.longest_stall(KILL, [0, 1]) == {0: pytest.approx(11.0), 1: pytest.approx(8.0)}


def test_the_figures_name_the_partitions_as_json_keys() -> None:
    figures = probes().figures(KILL, [0], partitions=2)
    assert figures["kill_to_routing_per_partition_seconds"] == {"0": 11.5}
    assert figures["kill_to_routing_max_seconds"] == pytest.approx(11.5)
    assert figures["survivor_partitions_kill_to_routing_seconds"] == {"1": 1.0}
    assert figures["longest_stall_after_kill_seconds"] == {"0": 11.0, "1": 8.0}
    assert (figures["probes_produced"], figures["probes_missing"], figures["probes_duplicated"]) == (7, 1, 1)
    assert figures["copies_by_partition"] == {"0": 1}
    orjson.dumps(figures)  # a JSON object's keys must be strings


def line(standby_offset: int | None) -> dict[str, object]:
    return {
        "t": 5.0,
        "partitions": [{"p": 0, "active": True}, {"p": 2, "active": True}],
        "tables": {
            "standby_replicas": 1,
            "active": [["app-users-changelog", 0, 99], ["app-users-changelog", 2, None]],
            "standby": [["app-users-changelog", 1, standby_offset], ["app-inbox-changelog", 1, None]],
        },
    }


def test_standbys_are_caught_up_when_their_offsets_reach_the_changelog_ends() -> None:
    ends = {("app-users-changelog", 1): 500, ("app-inbox-changelog", 1): 0}
    behind = Holdings.from_line(line(199))
    assert behind.owned == {0, 2}
    assert behind.partitions("app-users-changelog") == {0, 1, 2}
    assert behind.partitions_active("app-users-changelog") == {0, 2}
    assert behind.standby_left(ends) == 300
    assert Holdings.from_line(line(499)).standby_left(ends) == 0
    assert Holdings.from_line(line(None)).standby_left(ends) == 500


def test_records_left_in_fausts_offset_conventions() -> None:
    assert records_left(None, 0) == 0
    assert records_left(-1, 3) == 3
    assert records_left(2, 3) == 0
    assert records_left(7, 3) == 0  # past the end reads nothing


def test_the_last_probe_line_with_tables_is_taken() -> None:
    text = b"\n".join([orjson.dumps(line(1)), orjson.dumps({"error": "x"}), b'{"t": 1, "tab']).decode()
    held = last_holdings(text)
    assert held is not None and held.standby[("app-users-changelog", 1)] == 1
    assert last_holdings("") is None


def test_one_probe_recipient_per_partition() -> None:
    recipients = one_user_per_partition(1000, 8)
    assert [home_partition(r, 8) for r in recipients] == list(range(8))
    with pytest.raises(ValueError, match="do not cover"):
        one_user_per_partition(2, 8)


def test_membership_timeouts_are_the_settings_in_force() -> None:
    assert membership({})["session_timeout_seconds"] == 6.0
    assert membership({"HERALD_SESSION_TIMEOUT_SECONDS": "10"})["session_timeout_seconds"] == 10.0
