"""The WebSocket stack comparison's arithmetic and table (bench/ws_stacks.py), and the servers' command."""

from __future__ import annotations

from bench.ws_stack_servers import command, notification
from bench.ws_stacks import StackFigures, cpu_us_per_frame, figures_from, per_connection_bytes, table


def figures(stack: str, *, base: int, idle: int, cpu: float, frames: int, n: int = 1000) -> StackFigures:
    return StackFigures(
        stack,
        n,
        connected=n,
        rss_base_bytes=base,
        rss_idle_bytes=idle,
        cpu_seconds=cpu,
        frames=frames,
        frames_expected=frames,
        held=n,
    )


def test_rss_per_connection_is_the_growth_over_the_sockets_connected() -> None:
    f = figures("a", base=50_000_000, idle=80_000_000, cpu=1.0, frames=10_000)
    assert per_connection_bytes(f) == 30_000
    assert cpu_us_per_frame(f) == 100.0


def test_a_failed_or_empty_measurement_has_no_figures() -> None:
    assert per_connection_bytes(StackFigures("a", 1000, error="boom")) is None
    assert cpu_us_per_frame(StackFigures("a", 1000, connected=5)) is None


def test_the_table_gives_ratios_against_the_best_and_says_what_failed() -> None:
    rows = [
        figures("fast", base=0, idle=30_000_000, cpu=1.0, frames=100_000),
        figures("slow", base=0, idle=90_000_000, cpu=4.0, frames=100_000),
        StackFigures("broken", 1000, error="ImportError: no module"),
    ]
    lines = table(rows).splitlines()
    assert "| fast | 30.0 (1.0x) | 10.0 (1.0x) | 1,000 / 1,000 |" in lines[2]
    assert "| slow | 90.0 (3.0x) | 40.0 (4.0x) |" in lines[3]
    assert lines[4].startswith("| broken | failed: ImportError: no module |")


def test_figures_come_back_from_the_json_rows() -> None:
    row = {**figures("a", base=1, idle=2, cpu=0.5, frames=3).__dict__, "kb_per_connection": 0.001}
    assert figures_from([row]) == [figures("a", base=1, idle=2, cpu=0.5, frames=3)]


def test_the_broadcast_command_and_the_frame() -> None:
    assert command("broadcast 20") == 20
    assert command("ping") is None
    assert command(None) is None
    assert 300 <= len(notification(0)) <= 400
