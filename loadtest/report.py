"""latest.json and latest.md: the figures, their ratios to the baselines, and the targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.truth import EVERY_FLAG, REUSE_ONLY, score_of_checks

GATE_P99 = "gate p99 ms @2000/s"
GATE_OVERLOAD = "gate answered p99 ms @4000/s"
VS_QUIX = "stream codes/s ÷ (c) Quix Streams"
VS_BATCHED = "stream codes/s ÷ (d) PostgreSQL batched"
TARGETS = {
    "stream codes/s (1 consumer)": (50_000, ">="),
    VS_QUIX: (3, ">="),
    VS_BATCHED: (0.9, ">="),
    "flag latency p99 ms @20k codes/s": (250, "<="),
    GATE_P99: (10, "<="),
    GATE_OVERLOAD: (1000, "<="),
    "gate server CPU µs/call @500/s": (600, "<="),
    "verify server CPU µs/call @500/s": (300, "<="),
    "memory B/code": (24, "<="),
    "rebuild codes/s": (1_000_000, ">="),
}


def figures(results: dict[str, Any]) -> dict[str, float | None]:
    gate = {row["rate"]: row for row in results["gate"]["rates"]}
    verify = results["gate"].get("verify") or {}
    return {
        "stream codes/s (1 consumer)": results["stream"]["codes_per_s"],
        VS_QUIX: _stream_over(results, "quixstreams"),
        VS_BATCHED: _stream_over(results, "postgres_batched"),
        "flag latency p99 ms @20k codes/s": results["stream"]["flag_latency_ms"]["p99"],
        GATE_P99: gate.get(2000, {}).get("p99_ms"),
        GATE_OVERLOAD: gate.get(4000, {}).get("answered_p99_ms"),
        "gate server CPU µs/call @500/s": gate.get(500, {}).get("server_sum_us_per_call"),
        "verify server CPU µs/call @500/s": verify.get("server_sum_us_per_call"),
        "memory B/code": results["memory"]["bytes_per_code"],
        "rebuild codes/s": results["rebuild"]["codes_per_s"],
    }


def _stream_over(results: dict[str, Any], baseline: str) -> float | None:
    """One consumer's codes/s over a baseline's, measured in the same run."""
    ours = results["stream"]["codes_per_s"]
    theirs = results.get("baselines", {}).get(baseline, {}).get("codes_per_s")
    return round(ours / theirs, 3) if ours and theirs else None


def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, value in figures(results).items():
        target, sense = TARGETS[name]
        met = value is not None and (value >= target if sense == ">=" else value <= target)
        factor = None if not value else (target / value if sense == ">=" else value / target)
        out[name] = {"value": value, "target": f"{sense} {target}", "met": met,
                     "off_by_factor": None if met or factor is None else round(factor, 2)}
    gate = {row["rate"]: row for row in results["gate"]["rates"]}
    # At 2000/s the target is p99 with every call answered, and answered right: an error, a
    # shed (a call not served) or a wrong answer fails it whatever the p99 was.
    at2000 = out[GATE_P99]
    at2000.update(_served(gate.get(2000, {})))
    at2000["met"] = at2000["met"] and not (at2000["errors"] or at2000["sheds"]) and \
        at2000["correct"]
    out[GATE_OVERLOAD].update(_served(gate.get(4000, {})))  # past capacity: reported
    return out


def _served(row: dict[str, Any]) -> dict[str, Any]:
    return {"errors": row.get("errors", 0), "sheds": row.get("sheds", 0),
            "correct": row.get("correct", True)}


# The baselines' rows: (key in results["baselines"], label in the tables).
BASELINES = (
    ("redis_key_per_code", "(a) Redis key per code, SET NX"),
    ("postgres_only", "(b) PostgreSQL only, INSERT … ON CONFLICT"),
    ("quixstreams", "(c) Quix Streams + RocksDB"),
    ("quixstreams_changelog", "(c′) Quix Streams + RocksDB + changelog"),
    ("postgres_batched", "(d) PostgreSQL batched consumer"),
)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    ours = results["stream"]["codes_per_s"]
    base = results["baselines"]
    refs = {name: base.get(name, {}).get("codes_per_s") for name, _ in BASELINES}
    refs["ceiling_lua_server"] = results["ceiling"].get("lua_server_codes_per_s")
    return {name: round(ours / ref, 3) if ref else None for name, ref in refs.items()}


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    results["targets"] = verdicts(results)
    results["ratios_vs_baselines"] = ratios(results)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


README_BEGIN = "<!-- loadtest:begin (written by `tracegate loadtest all`) -->"
README_END = "<!-- loadtest:end -->"


def show_in_readme(results: dict[str, Any], readme: Path) -> bool:
    """Put a full run's tables into the README between its markers (a quick run's figures
    are too small a sample to stand there). False if the README has no markers."""
    text = readme.read_text()
    if results["meta"]["quick"] or README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    body = markdown(results).split("\n", 2)[2]  # without the page title
    readme.write_text(f"{head}{README_BEGIN}\n{body}{README_END}{tail}")
    return True


def markdown(results: dict[str, Any]) -> str:
    meta, stream = results["meta"], results["stream"]
    lines = [
        f"# tracegate load test ({'quick' if meta['quick'] else 'full'})", "",
        f"Reproduce: `{meta['command']}` · {meta['machine']['cpus']} CPUs, "
        f"{meta['machine']['memory_gb']} GB, everything on loopback · correct: stream "
        f"**{stream['correct']}** · gate **{results['gate'].get('correct')}** · rebuild "
        f"**{results['rebuild'].get('correct')}**", "",
        "| figure | value | target | met | off by |", "|---|---|---|---|---|",
    ]
    for name, v in results["targets"].items():
        off = f"{v['off_by_factor']}×" if v["off_by_factor"] else ""
        lines.append(f"| {name} | {_with_service(v)} | {v['target']} | "
                     f"{'yes' if v['met'] else 'no'} | {off} |")
    cpus = meta["machine"]["cpus"]
    gate = results["gate"]
    lines += ["", *_throughput_table(results), "", *baselines_table(results), "",
              *_cpu_line(stream, cpus),
              *_latency_within(stream), "", *_rebuild_cpu_line(results["rebuild"], cpus),
              *_gate_table(results), "", *_gate_cpu_line(gate["rates"], cpus),
              *_verify_line(gate.get("verify"), cpus), *_floor_table(gate),
              *[f"- {note}" for note in meta["notes"]], ""]
    return "\n".join(lines)


def _floor_table(gate: dict[str, Any]) -> list[str]:
    """The gate beside its floor (loadtest/baselines/gate_floor.py) at the same rates: what
    the stack costs a call before any of tracegate's code runs."""
    floor = gate.get("floor")
    if not floor:
        return []
    ours = {row["rate"]: row for row in gate["rates"]}
    rows = [(f"settle @{row['rate']}/s", row, ours.get(row["rate"])) for row in floor["rates"]]
    if "verify" in floor:
        rows.append((f"verify @{floor['verify']['rate']}/s", floor["verify"], gate.get("verify")))
    out = ["The gate's floor: a bare ASGI app on the same uvicorn workers, Redis and Kafka doing "
           "only what no gate can skip (decode, one script call, the Kafka acknowledgement; "
           "verify: one script call), in the same run:", "",
           "| floor | p50 ms | p99 ms | errors | floor server µs/call | gate server µs/call | "
           "gate ÷ floor |", "|---|---|---|---|---|---|---|"]
    for label, row, mine in rows:
        theirs = row.get("server_sum_us_per_call")
        us = (mine or {}).get("server_sum_us_per_call")
        ratio = round(us / theirs, 2) if us and theirs else ""
        out.append(f"| {label} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} | "
                   f"{theirs} | {us or ''} | {ratio} |")
    return [*out, ""]


def _with_service(verdict: dict[str, Any]) -> str:
    """A figure with what went wrong beside it: errors, sheds, wrong answers."""
    notes = [f"{verdict[key]} {key}" for key in ("errors", "sheds") if verdict.get(key)]
    if verdict.get("correct") is False:
        notes.append("wrong answers")
    return f"{verdict['value']} ({', '.join(notes)})" if notes else str(verdict["value"])


def _throughput_table(results: dict[str, Any]) -> list[str]:
    base, ratio = results["baselines"], results["ratios_vs_baselines"]
    rows = [("tracegate, 1 consumer", results["stream"]["codes_per_s"], 1.0),
            ("tracegate, 2 consumers", results["stream"]["codes_per_s_2_consumers"], None),
            *[(label, base[name].get("codes_per_s"), ratio.get(name))
              for name, label in BASELINES if name in base],
            ("ceiling: CAS script, Redis server time", results["ceiling"].get(
                "lua_server_codes_per_s"), ratio["ceiling_lua_server"])]
    out = ["| codes/s | value | tracegate (1 consumer) ÷ this |", "|---|---|---|"]
    out += [f"| {name} | {value} | {'' if r is None else r} |" for name, value, r in rows]
    out.append(f"| redis-benchmark SET, -P 64 (ops/s) | "
               f"{results['ceiling'].get('redis_ops_per_s')} | |")
    return out


def baselines_table(results: dict[str, Any]) -> list[str]:
    """Each row's CPU a code and its flags against the ground truth: expected, found, matched,
    missed, false (raised, not expected), doubled (raised again)."""
    stream, base = results.get("stream", {}), results["baselines"]
    rows: list[tuple[str, dict[str, Any]]] = []
    if stream.get("runs"):
        rows.append(("tracegate, 1 consumer", {
            "cpu_us_per_code": stream.get("cpu_us_per_code"),
            "flags": score_of_checks(stream["runs"][0]["checks"])}))
    rows += [(label, base[name]) for name, label in BASELINES if name in base]
    out = ["| row | CPU µs/code (all processes) | flags scope | expected | found | matched | "
           "missed | false | doubled |", "|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows:
        flags = row.get("flags") or {}
        counts = " | ".join(str(flags.get(k, "")) for k in
                            ("expected", "found", "matched", "missed", "false", "doubled"))
        out.append(f"| {label} | {_cpu_cell(row.get('cpu_us_per_code'))} | "
                   f"{_SCOPES.get(flags.get('scope', ''), '')} | {counts} |")
    return out


_SCOPES = {EVERY_FLAG: "every flag", REUSE_ONLY: "code re-use"}


def baselines_markdown(section: dict[str, Any]) -> str:
    """`tracegate loadtest baselines`: tracegate's one consumer against each baseline, then
    each row's CPU and flags."""
    base, ratio = section["baselines"], section["ratios_vs_baselines"]
    lines = ["| codes/s | value | tracegate (1 consumer) ÷ this |", "|---|---|---|",
             f"| tracegate, 1 consumer | {section['stream']['codes_per_s']} | 1.0 |"]
    lines += [f"| {label} | {base[name].get('codes_per_s')} | {ratio.get(name) or ''} |"
              for name, label in BASELINES if name in base]
    return "\n".join([*lines, "", *baselines_table(section), ""])


def _cpu_cell(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return ""
    by_role = ", ".join(f"{role} {us}" for role, us in sorted(cpu.items(), key=lambda i: -i[1])
                        if us)
    return f"{sum(cpu.values()):,.1f} ({by_role})"


def _cpu_line(stream: dict[str, Any], cpus: int) -> list[str]:
    return _cpu_sentence("CPU per code, 1 consumer, µs (every process shares the same cores)",
                         stream.get("cpu_us_per_code"), cpus, ("a code", "codes/s"))


def correct(results: dict[str, Any]) -> bool:
    """Every stream run matched the workload's ground truth, every gate answer its own and
    every rebuilt set the claims'."""
    return bool(results["stream"]["correct"] and results["gate"]["correct"]
                and results["rebuild"].get("correct", True))


def _rebuild_cpu_line(rebuild: dict[str, Any], cpus: int) -> list[str]:
    if "cpu_us_per_code" not in rebuild:
        return []
    return _cpu_sentence(f"CPU per code, rebuild of {rebuild['codes']:,} codes, µs (rebuilt "
                         f"set exact: {rebuild.get('correct')})", rebuild.get("cpu_us_per_code"),
                         cpus, ("a code", "codes/s"))


def _gate_cpu_line(rates: list[dict[str, Any]], cpus: int) -> list[str]:
    """At the lowest rate, the one least likely to be saturated."""
    if not rates:
        return []
    return [*_cpu_sentence(f"CPU per gate call at {rates[0]['rate']}/s, µs",
                           rates[0].get("cpu_us_per_call"), cpus, ("a call", "calls/s")),
            *_server_sum(rates[0], 600)]


def _server_sum(row: dict[str, Any], target: int) -> list[str]:
    total = row.get("server_sum_us_per_call")
    if total is None:
        return []
    return [f"The gate's own processes (API, Redis, PostgreSQL, Kafka; not the load "
            f"generator): {total:,.1f} µs a call (target ≤ {target}).", ""]


def _verify_line(verify: dict[str, Any] | None, cpus: int) -> list[str]:
    if not verify:
        return []
    sentence = (f"Verify (`POST /v1/codes/verify`, {verify['codes_per_call']} codes a call, "
                f"paid earlier or never settled) at {verify['rate']}/s: p50 "
                f"{verify['p50_ms']} ms, p95 {verify['p95_ms']} ms, p99 {verify['p99_ms']} ms "
                f"(answered {verify['answered_p99_ms']} ms), {verify['sheds']} sheds, "
                f"{verify['errors']} errors, correct: {verify['correct']}.")
    return [sentence, "", *_cpu_sentence(f"CPU per verify call at {verify['rate']}/s, µs",
                                         verify.get("cpu_us_per_call"), cpus,
                                         ("a call", "calls/s")), *_server_sum(verify, 300)]


def _cpu_sentence(
    lead: str, cpu: dict[str, float] | None, cpus: int, units: tuple[str, str]
) -> list[str]:
    """Each role's share, then what the cores can carry at their sum, busy all the time: an
    upper bound. `units`: (one unit, the rate's unit)."""
    if not cpu:
        return []
    by_role = " · ".join(f"{role} {us}" for role, us in sorted(cpu.items(), key=lambda i: -i[1]))
    sentence = f"{lead}: {by_role}."
    total = sum(cpu.values())
    if total > 0:
        sentence += (f" In all {total:,.1f} µs {units[0]}: {cpus} CPUs carry at most "
                     f"{cpus * 1e6 / total:,.0f} {units[1]} at this cost.")
    return [sentence, ""]


def _latency_within(stream: dict[str, Any]) -> list[str]:
    within = stream.get("flag_latency_within_capacity")
    if within is None:
        return []
    ms = within["ms"]
    lines = [f"Flag latency at {within['codes_per_s']:,.0f} codes/s (half of one consumer's "
             f"measured capacity, below saturation): p50 {ms['p50']} ms, p95 {ms['p95']} ms, "
             f"p99 {ms['p99']} ms."]
    two = stream.get("flag_latency_2_consumers_ms")
    if two:
        lines += ["", f"Flag latency at {stream['flag_latency_at_codes_per_s']:,.0f} codes/s "
                  f"with two consumers: p50 {two['p50']} ms, p95 {two['p95']} ms, p99 "
                  f"{two['p99']} ms."]
    return lines


def _gate_table(results: dict[str, Any]) -> list[str]:
    """Latency of every call (sheds and errors too), and p99 of the answered ones."""
    out = ["| gate rate/s | p50 ms | p95 ms | p99 ms | answered p99 ms | max ms | sheds | "
           "errors | correct | server µs/call |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["gate"]["rates"]:
        out.append(f"| {row['rate']} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | "
                   f"{row.get('answered_p99_ms', '')} | {row['max_ms']} | "
                   f"{row.get('sheds', '')} | {row['errors']} | {row.get('correct', '')} | "
                   f"{row.get('server_sum_us_per_call', '')} |")
    return out


def write_cluster(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """`tracegate loadtest cluster`: its own files, never latest.*, which hold the single-Redis
    run the README and the capacity model read."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "cluster.json", directory / "cluster.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(cluster_markdown(results))
    return json_path, md_path


def cluster_markdown(results: dict[str, Any]) -> str:
    meta, stream = results["meta"], results["stream"]
    cpus = meta["machine"]["cpus"]
    lines = [
        f"# tracegate load test on a Redis Cluster of {meta['redis_primaries']} primaries "
        f"({'quick' if meta['quick'] else 'full'})", "",
        f"Reproduce: `{meta['command']}` · {cpus} CPUs, {meta['machine']['memory_gb']} GB, "
        f"everything on loopback · correct: **{stream['correct']}**", "",
        "| codes/s | value |", "|---|---|",
        f"| 1 consumer | {stream['codes_per_s']} |",
        f"| 2 consumers | {stream['codes_per_s_2_consumers']} |", "",
        *_cpu_line(stream, cpus), *_latency_within(stream), "",
        *_gate_table(results), "", *_gate_cpu_line(results["gate"]["rates"], cpus),
        *[f"- {note}" for note in meta["notes"]], "",
    ]
    return "\n".join(lines)
