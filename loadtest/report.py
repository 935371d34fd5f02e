"""latest.json and latest.md: the figures, their ratios to the baselines, and the targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {
    "stream codes/s (1 consumer)": (50_000, ">="),
    "flag latency p99 ms @20k codes/s": (250, "<="),
    "gate p99 ms @2000/s": (10, "<="),
    "memory B/code": (24, "<="),
    "rebuild codes/s": (1_000_000, ">="),
}


def figures(results: dict[str, Any]) -> dict[str, float | None]:
    gate = {row["rate"]: row for row in results["gate"]["rates"]}
    at2000 = gate.get(2000, {})
    return {
        "stream codes/s (1 consumer)": results["stream"]["codes_per_s"],
        "flag latency p99 ms @20k codes/s": results["stream"]["flag_latency_ms"]["p99"],
        "gate p99 ms @2000/s": at2000.get("p99_ms"),
        "memory B/code": results["memory"]["bytes_per_code"],
        "rebuild codes/s": results["rebuild"]["codes_per_s"],
    }


def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    gate_errors = {row["rate"]: row["errors"] for row in results["gate"]["rates"]}.get(2000, 0)
    for name, value in figures(results).items():
        target, sense = TARGETS[name]
        met = value is not None and (value >= target if sense == ">=" else value <= target)
        factor = None if not value else (target / value if sense == ">=" else value / target)
        out[name] = {"value": value, "target": f"{sense} {target}", "met": met,
                     "off_by_factor": None if met or factor is None else round(factor, 2)}
    # The gate's target is p99 with zero errors: errors fail it whatever the p99 was.
    gate = out["gate p99 ms @2000/s"]
    gate["errors"] = gate_errors
    gate["met"] = gate["met"] and not gate_errors
    return out


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    ours = results["stream"]["codes_per_s"]
    base = results["baselines"]
    refs = {"redis_key_per_code": base["redis_key_per_code"].get("codes_per_s"),
            "postgres_only": base["postgres_only"].get("codes_per_s"),
            "quixstreams": base["quixstreams"].get("codes_per_s"),
            "ceiling_lua_server": results["ceiling"].get("lua_server_codes_per_s")}
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
        f"{meta['machine']['memory_gb']} GB, everything on loopback · correct: "
        f"**{correct(results)}**", "",
        "| figure | value | target | met | off by |", "|---|---|---|---|---|",
    ]
    for name, v in results["targets"].items():
        off = f"{v['off_by_factor']}×" if v["off_by_factor"] else ""
        value = f"{v['value']} ({v['errors']} errors)" if v.get("errors") else v["value"]
        lines.append(f"| {name} | {value} | {v['target']} | {'yes' if v['met'] else 'no'} "
                     f"| {off} |")
    cpus = meta["machine"]["cpus"]
    lines += ["", *_throughput_table(results), "", *_cpu_line(stream, cpus),
              *_latency_within(stream), "", *_rebuild_cpu_line(results["rebuild"], cpus),
              *_gate_table(results), "", *_gate_cpu_line(results["gate"]["rates"], cpus),
              *[f"- {note}" for note in meta["notes"]], ""]
    return "\n".join(lines)


def _throughput_table(results: dict[str, Any]) -> list[str]:
    base, ratio = results["baselines"], results["ratios_vs_baselines"]
    rows = [("tracegate, 1 consumer", results["stream"]["codes_per_s"], 1.0),
            ("tracegate, 2 consumers", results["stream"]["codes_per_s_2_consumers"], None),
            ("(a) Redis key per code, SET NX", base["redis_key_per_code"].get("codes_per_s"),
             ratio["redis_key_per_code"]),
            ("(b) PostgreSQL only, INSERT … ON CONFLICT", base["postgres_only"].get(
                "codes_per_s"), ratio["postgres_only"]),
            ("(c) Quix Streams + RocksDB", base["quixstreams"].get("codes_per_s"),
             ratio["quixstreams"]),
            ("ceiling: CAS script, Redis server time", results["ceiling"].get(
                "lua_server_codes_per_s"), ratio["ceiling_lua_server"])]
    out = ["| codes/s | value | tracegate (1 consumer) ÷ this |", "|---|---|---|"]
    out += [f"| {name} | {value} | {'' if r is None else r} |" for name, value, r in rows]
    out.append(f"| redis-benchmark SET, -P 64 (ops/s) | "
               f"{results['ceiling'].get('redis_ops_per_s')} | |")
    return out


def _cpu_line(stream: dict[str, Any], cpus: int) -> list[str]:
    return _cpu_sentence("CPU per code, 1 consumer, µs (every process shares the same cores)",
                         stream.get("cpu_us_per_code"), cpus, ("a code", "codes/s"))


def correct(results: dict[str, Any]) -> bool:
    """Every stream run matched the workload's ground truth and every rebuilt set the claims'."""
    return bool(results["stream"]["correct"] and results["rebuild"].get("correct", True))


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
    return _cpu_sentence(f"CPU per gate call at {rates[0]['rate']}/s, µs",
                         rates[0].get("cpu_us_per_call"), cpus, ("a call", "calls/s"))


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
    return [f"Flag latency at {within['codes_per_s']:,.0f} codes/s (half of one consumer's "
            f"measured capacity, below saturation): p50 {ms['p50']} ms, p95 {ms['p95']} ms, "
            f"p99 {ms['p99']} ms."]


def _gate_table(results: dict[str, Any]) -> list[str]:
    out = ["| gate rate/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
           "|---|---|---|---|---|---|"]
    for row in results["gate"]["rates"]:
        out.append(f"| {row['rate']} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | "
                   f"{row['max_ms']} | {row['errors']} |")
    return out
