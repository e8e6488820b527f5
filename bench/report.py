"""The run's outputs: the JSON result file, the PNG (throughput bars, latency CDFs) and the printed table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "MB":
        return f"{value / 1e6:,.0f} MB"
    if unit == "KB":
        return f"{value / 1e3:,.1f} KB"
    if unit == "ms":
        return f"{value:,.1f} ms"
    return f"{value:,.0f} {unit}"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, ratio to the limit) lines for the printed table."""
    out: list[tuple[str, str, str]] = []
    limit = result.get("limit", {}).get("events_per_second")
    if limit:
        out.append((f"limit: pass-through ({result['limit']['client']})", _fmt(limit, "ev/s"), "1.00"))
        for client, r in result["limit"]["by_client"].items():
            out.append(
                (
                    f"  pass-through {client}",
                    _fmt(r["events_per_second"], "ev/s"),
                    f"{r['events_per_second'] / limit:.2f}",
                )
            )
    if "pipeline" in result:
        p = result["pipeline"]
        out.append(
            (
                f"herald pipeline ({p['users']:,} users, "
                + (
                    "whole backlog delivered)"
                    if p.get("drained")
                    else "cut off before the backlog was delivered)"
                ),
                _fmt(p["events_per_second"], "ev/s"),
                f"{p['ratio_to_limit']:.3f}",
            )
        )
        out.append(
            (
                "  notifications",
                _fmt(p["notifications_per_second"], "ntf/s"),
                f"{p['notifications_per_second'] / limit:.3f}" if limit else "-",
            )
        )
        if "delivered_in_window" in p:
            counts = " / ".join(f"{channel} {n:,}" for channel, n in p["delivered_in_window"].items())
            out.append((f"  delivered in the {p['window_seconds']:.0f} s window", counts, ""))
        if "worker_cpu_us_per_notification" in p:
            workers = p.get("workers", 1)
            out.append(
                (
                    "  worker CPU per notification" + (f" ({workers} workers)" if workers > 1 else ""),
                    _fmt(p["worker_cpu_us_per_notification"], "µs"),
                    "-",
                )
            )
        if p.get("cores_used"):
            used = ", ".join(f"{role} {n:.2f}" for role, n in p["cores_used"].items())
            out.append(("  cores used in the window", used, ""))
    if "peers" in result:
        out += peer_rows(result["peers"], limit)
    for key, load in (("latency", "half sustained"), ("latency_quarter", "a quarter")):
        if key in result:
            out += latency_rows(result[key], load)
    for m in result.get("memory", []):
        label = f"worker peak RSS, {m['users']:,} users, {m['store']}"
        value = _fmt(m["peak_rss_bytes"], "MB") if m.get("ok") else f"failed: {m.get('error', '')[:40]}"
        out.append((label, value, ""))
        if m.get("ok"):
            together = " (both stores at once)" if m.get("concurrent") else ""
            out.append((f"  start to ready (table recovery){together}", _fmt(m["ready_seconds"], "s"), ""))
    if "state" in result:
        out += state_rows(result["state"])
    if "standby" in result:
        out += standby_rows(result["standby"])
    for g in result.get("gateway", []):
        n = g["connections"]
        out.append(
            (
                f"gateway {n:,} conns: delivered",
                _fmt(g["messages_per_second"], "msg/s"),
                f"{g['messages_per_second'] / limit:.3f}" if limit else "-",
            )
        )
        out.append(
            (
                "  connected / offered / delivered",
                f"{g['connected']:,} / {g['offered_per_second']:,.0f}/s / {g['delivered_fraction']:.0%}",
                "",
            )
        )
        lat = g["latency"]
        quantiles = f"{lat['p50_ms']:,.0f} / {lat['p95_ms']:,.0f} / {lat['p99_ms']:,.0f} ms"
        out.append(("  feed→client p50 / p95 / p99 (target p99 < 100)", quantiles, ""))
        if "broker_hop_alone" in g:
            alone = g["broker_hop_alone"]["latency"]
            out.append(
                (
                    "  limit: broker hop alone, same feed, no gateway",
                    f"{alone['p50_ms']:,.0f} / {alone['p95_ms']:,.0f} / {alone['p99_ms']:,.0f} ms",
                    "",
                )
            )
        out.append(
            ("  gateway RSS per idle socket (target ≤ 30 KB)", _fmt(g["rss_per_connection_bytes"], "KB"), "")
        )
        if "gateway_cpu_us_per_message" in g:
            out.append(("  gateway CPU per message", f"{g['gateway_cpu_us_per_message']:,.1f} µs", ""))
        if "gateway_ready_seconds" in g:
            out.append(("  gateway spawn → ready (empty feed)", f"{g['gateway_ready_seconds']:.2f} s", ""))
    if result.get("inapp"):
        out += inapp_rows(result["inapp"])
    if "inapp_scale" in result:
        out += scale_rows(result["inapp_scale"])
    return out


def inapp_rows(inapp: dict[str, Any]) -> list[tuple[str, str, str]]:
    """In-app produce → socket at low load, through the worker (bench.inapp_latency)."""
    lat = inapp["latency"]
    rows = [
        (
            f"in-app → socket, {inapp['rate_per_second']:.0f}/s, {inapp['received']:,}/{inapp['offered']:,}",
            f"{lat['p50_ms']:,.0f} / {lat['p95_ms']:,.0f} / {lat['p99_ms']:,.0f} ms",
            "",
        ),
        ("  (p50 / p95 / p99; target p99 < 50 ms)", "", ""),
    ]
    hop = inapp.get("worker_hop")
    if hop and hop.get("count"):
        rows.append(
            (
                "  of which produce → feed (the worker's hop)",
                f"{hop['p50_ms']:,.0f} / {hop['p95_ms']:,.0f} / {hop['p99_ms']:,.0f} ms",
                "",
            )
        )
    event = inapp.get("from_event")
    if event and event["latency"].get("count"):
        lat = event["latency"]
        rows += [
            (
                f"event → socket, {event['rate_per_second']:.0f}/s, {event['received']}/{event['offered']}",
                f"{lat['p50_ms']:,.0f} / {lat['p95_ms']:,.0f} / {lat['p99_ms']:,.0f} ms",
                "",
            ),
            ("  (p50 / p95 / p99; target p50 < 50, p99 < 100 ms)", "", ""),
        ]
    return rows


def scale_rows(scale: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The in-app side at scale (bench.inapp_scale)."""
    out: list[tuple[str, str, str]] = []
    retained = scale["retained"]
    for key, label in (("start_empty", "empty feed"), ("start_retained", f"{retained:,} retained")):
        start = scale.get(key)
        if not start:
            continue
        out.append(
            (f"gateway spawn → ready, {label} (target < 2 s)", f"{start['herald_gateway_seconds']:.2f} s", "")
        )
        positioning = start.get("positioning_seconds")
        out.append(
            (
                "  of which server start → feed positioned",
                "-" if positioning is None else f"{positioning:.2f} s",
                "",
            )
        )
        out.append(("  same serve() without the herald CLI", f"{start['gateway_entry_seconds']:.2f} s", ""))
    users = scale.get("users")
    if users:
        for name in ("few", "many"):
            u = users[name]
            out.append(
                (
                    f"gateway RSS, {users['sockets']:,} sockets, feed for {u['users']:,} users",
                    f"{_fmt(u['peak_rss_bytes'], 'MB')} peak / {_fmt(u['settled_rss_bytes'], 'MB')}",
                    "",
                )
            )
    conns = scale.get("connections")
    if conns:
        out.append(
            (
                f"gateway sockets held, {conns['asked']:,} asked",
                f"{conns['welcomed']:,} ({conns['delivered']:,} got a frame)",
                "",
            )
        )
        out.append(("  RSS per idle socket", _fmt(conns["rss_per_connection_bytes"], "KB"), ""))
    return out


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def peer_rows(peers: dict[str, Any], limit: float | None) -> list[tuple[str, str, str]]:
    """The routing peers (Herald's steps in other runtimes) and the delivery ceiling, each with what Herald's
    pipeline of the same run reached against it (`herald / peer`; "-" when the pipeline did not run)."""
    out: list[tuple[str, str, str]] = []
    herald = peers.get("herald_routing_events_per_second")
    out.append(
        (
            "herald routing (pipeline, in-app records)",
            "- (pipeline not run)" if herald is None else _fmt(herald, "ev/s"),
            f"{herald / limit:.3f}" if herald is not None and limit else "-",
        )
    )
    for name, r in peers["routing"].items():
        rate = r["events_per_second"]
        out.append(
            (
                f"routing peer: {name} ({peers['events']:,} ev)",
                _fmt(rate, "ev/s"),
                f"{rate / limit:.3f}" if limit else "-",
            )
        )
        out.append((f"  herald / {name}", _ratio(peers["herald_routing_to"].get(name)), ""))
    alone = peers.get("herald_routing_alone")
    if alone is not None:
        out.append(
            ("herald routing alone (routing agents only)", _fmt(alone["events_per_second"], "ev/s"), "")
        )
        for name, ratio in peers["herald_routing_alone_to"].items():
            observed = peers["routing"][name].get("observed_events_per_second")
            out.append((f"  {name}, observed the same way", _fmt(observed, "ev/s"), ""))
            out.append((f"  herald alone / {name}", _ratio(ratio), ""))
        if "cpu_us_per_event" in alone:  # None: none seen, a backlog too small (bench.peers)
            out.append(("herald routing alone, CPU per event", _fmt(alone["cpu_us_per_event"], "µs"), ""))
            for name, ratio in peers.get("herald_routing_alone_cpu_to", {}).items():
                per_event = peers["routing"][name].get("cpu_us_per_event")
                out.append((f"  {name}, CPU per event", _fmt(per_event, "µs"), ""))
                out.append((f"  {name} / herald alone, CPU per event", _ratio(ratio), ""))
    for channel, c in peers["delivery_ceiling"].items():
        out.append(
            (
                f"delivery ceiling: {channel} ({c['provider']}, {c['concurrency']} in flight)",
                _fmt(c["notifications_per_second"], "ntf/s"),
                "",
            )
        )
        out.append((f"  bare SDK CPU per send ({channel})", _fmt(c.get("cpu_us_per_notification"), "µs"), ""))
        herald_rate = peers["herald_delivery_per_second"].get(channel)
        delivered = "-" if herald_rate is None else _fmt(herald_rate, "ntf/s")
        out.append((f"  herald {channel} delivered (pipeline)", delivered, ""))
        ratio = _ratio(peers["herald_delivery_to_ceiling"].get(channel))
        out.append((f"  herald / ceiling ({channel})", ratio, ""))
    if peers.get("sdk_cpu_us_per_event") is not None:
        out.append(
            ("  bare SDK CPU per event (one send per channel)", _fmt(peers["sdk_cpu_us_per_event"], "µs"), "")
        )
    if peers.get("herald_notification_cpu_to_aiokafka_event_cpu") is not None:
        out.append(
            (
                "herald CPU per notification / aiokafka loop's per event",
                _ratio(peers["herald_notification_cpu_to_aiokafka_event_cpu"]),
                "",
            )
        )
    if peers.get("ceiling_bound_by") is not None:
        out.append(
            (
                f"  herald pipeline / ceiling ({peers['ceiling_bound_by']}, the slowest channel)",
                _ratio(peers.get("herald_pipeline_to_ceiling")),
                "",
            )
        )
    return out


def state_rows(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The worker's state (bench.state): recovery and restart per store, peak RSS, delivery cost."""
    out: list[tuple[str, str, str]] = []
    users = state["users"]
    runs = (
        ("cold_memory", "cold recovery, memory"),
        ("cold_rocksdb", "cold recovery, RocksDB"),
        ("restart_rocksdb", "clean restart, RocksDB"),
    )
    for key, name in runs:
        r = state.get(key)
        if r is None:
            continue
        if not r.get("ok"):
            out.append((f"{name} ({users:,} users)", f"failed: {r.get('error', '')[:40]}", ""))
            continue
        out.append((f"{name} ({users:,} users): start to ready", _fmt(r["ready_seconds"], "s"), ""))
        if r.get("records_per_second") is not None:
            out.append(("  changelog records/s while recovering", _fmt(r["records_per_second"], "rec/s"), ""))
        to_ready = r.get("peak_rss_to_ready_bytes")
        if to_ready is None:
            out.append(("  worker peak RSS", _fmt(r["peak_rss_bytes"], "MB"), ""))
        else:  # after ready, the bench's /metrics scrape counts a RocksDB table's keys by reading it
            peaks = f"{_fmt(to_ready, 'MB')} / {_fmt(r['peak_rss_bytes'], 'MB')}"
            out.append(("  worker peak RSS: to ready / whole run", peaks, ""))
    if "clean_stop_mark" in state:
        stop = state.get("cold_rocksdb", {}).get("stop_seconds", float("nan"))
        mark = "left" if state["clean_stop_mark"] else "MISSING"
        out.append(("  RocksDB SIGTERM: seconds to exit, clean-stop mark", f"{stop:.1f} s, {mark}", ""))
        if "rocksdb_disk_bytes" in state:
            out.append(("  RocksDB data on disk after the stop", _fmt(state["rocksdb_disk_bytes"], "MB"), ""))
    cost = state.get("delivery_cost")
    if cost:
        h = cost["history"]
        out.append(("delivery cost, new recipient (in-process)", f"{cost['new_us_0']:,.1f} µs", ""))
        out.append(
            (
                f"  recipient with {h:,} deliveries",
                f"{cost['new_us_history']:,.1f} µs (x{cost['new_ratio']:.2f})",
                "",
            )
        )
        out.append(("  old design (57e1105), new recipient", f"{cost['old_us_0']:,.1f} µs", ""))
        out.append(
            (
                f"  old design, {h:,} deliveries",
                f"{cost['old_us_history']:,.1f} µs (x{cost['old_ratio']:.2f})",
                "",
            )
        )
    return out


def standby_rows(standby: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A standby takeover (bench.standby): from the kill of one of two RocksDB workers to routing again."""
    users = standby["users"]
    if not standby.get("ok"):
        return [(f"standby takeover ({users:,} users)", f"failed: {standby.get('error', '')[:40]}", "")]
    moved = len(standby["partitions_taken_over"])
    member = standby["membership"]
    timeouts = f"{member['session_timeout_seconds']:g} s / {member['rebalance_timeout_seconds']:g} s"
    lost, copies = standby["probes_missing"], standby["probes_duplicated"]
    peaks = f"{_fmt(standby['survivor_peak_rss_takeover_bytes'], 'MB')} / "
    peaks += _fmt(standby["survivor_peak_rss_bytes"], "MB")
    return [
        (
            f"standby takeover ({users:,} users): kill → routing, {moved} partitions (target < 15 s)",
            f"{standby['kill_to_routing_max_seconds']:.1f} s",
            "",
        ),
        ("  kill → survivor not ready / ready again", _seconds_pair(standby), ""),
        ("  session / rebalance timeout", timeouts, ""),
        ("  changelog records read by the survivor", f"{standby['records_read']:,}", ""),
        (
            "  probes produced / lost / extra copies",
            f"{standby['probes_produced']:,} / {lost} / {copies}",
            "",
        ),
        ("  survivor peak RSS: takeover / whole run", peaks, ""),
        (
            "  standbys caught up, after both ready",
            _fmt(standby["standbys_caught_up_seconds_after_ready"], "s"),
            "",
        ),
    ]


def _seconds_pair(standby: dict[str, Any]) -> str:
    values = (standby.get("kill_to_not_ready_seconds"), standby.get("kill_to_ready_seconds"))
    return " / ".join("-" if v is None else f"{v:.1f} s" for v in values)


def print_table(result: dict[str, Any]) -> str:
    lines = rows(result)
    width = max(len(r[0]) for r in lines) + 2
    text = [f"{'figure':<{width}}{'value':>22}  ratio to limit", "-" * (width + 38)]
    text += [f"{a:<{width}}{b:>22}  {c}" for a, b, c in lines]
    return "\n".join(text)


def plot(result: dict[str, Any], path: Path) -> None:
    figure, (bars, cdf) = plt.subplots(1, 2, figsize=(13, 5))
    labels, values = [], []
    for client, r in result.get("limit", {}).get("by_client", {}).items():
        labels.append(f"pass-through\n{client}")
        values.append(r["events_per_second"])
    if "pipeline" in result:
        labels.append("herald\nevents")
        values.append(result["pipeline"]["events_per_second"])
        labels.append("herald\nnotifications")
        values.append(result["pipeline"]["notifications_per_second"])
    if "peers" in result:
        for name, r in result["peers"]["routing"].items():
            labels.append(f"routing\n{name}")
            values.append(r["events_per_second"])
        for channel, c in result["peers"]["delivery_ceiling"].items():
            labels.append(f"ceiling\n{channel}")
            values.append(c["notifications_per_second"])
    for g in result.get("gateway", []):
        labels.append(f"gateway\n{g['connections']:,} conns")
        values.append(g["messages_per_second"])
    bars.bar(labels, values, color="#4477aa")
    if values:
        bars.set_yscale("log")
    bars.set_ylabel("per second (log)")
    bars.set_title(f"Throughput ({result['sizes']['name']} run)")
    bars.tick_params(axis="x", labelsize=8)
    for name, series in _cdfs(result):
        if series:
            ys = [(i + 1) / len(series) for i in range(len(series))]
            cdf.plot(series, ys, label=name)
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log)")
    cdf.set_ylabel("fraction")
    cdf.set_title("Latency CDFs")
    cdf.axvline(100, color="grey", linestyle=":", label="100 ms target")
    cdf.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def latency_rows(lat: dict[str, Any], load: str) -> list[tuple[str, str, str]]:
    """One latency run (bench.pipeline.measure_latency): percentiles and what the worker used meanwhile."""
    ratio = f"{lat['ratio_to_limit_offered']:.3f}"
    out = [(f"latency load ({load})", _fmt(lat["offered_events_per_second"], "ev/s"), ratio)]
    for q in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        out.append((f"  event→provider {q[:-3]}", _fmt(lat["provider"][q], "ms"), ""))
    out.append(("  event→in-app topic p99", _fmt(lat["by_channel"]["inapp_topic"]["p99_ms"], "ms"), ""))
    if "worker_cpu_us_per_notification" in lat:
        cores = lat["cores_used"]["workers"]
        used = f"{cores:.2f} cores, {lat['worker_cpu_us_per_notification']:,.0f} µs/ntf"
        out.append(("  worker CPU while offered", used, ""))
    if lat.get("worker_main_thread"):
        main = lat["worker_main_thread"]
        out.append(
            (
                "  worker main thread ran / waited",
                f"{main['ran']:.2f} / {main['waited_for_a_core']:.2f} s/s",
                "",
            )
        )
    return out


def _cdfs(result: dict[str, Any]) -> list[tuple[str, list[float]]]:
    out = []
    if "latency" in result:
        out.append(("event→provider (half load)", result["latency"]["cdf_ms"]))
    if "latency_quarter" in result:
        out.append(("event→provider (quarter load)", result["latency_quarter"]["cdf_ms"]))
    for g in result.get("gateway", []):
        out.append((f"feed→client, {g['connections']:,} conns", g.get("cdf_ms", [])))
    if result.get("inapp"):
        out.append(("in-app→client, 20/s", result["inapp"].get("cdf_ms", [])))
    return out
