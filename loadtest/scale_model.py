"""The capacity model of SCALE.md: the issue's national figures divided by this repository's own
per-unit measurements (loadtest/results/latest.json: CPU a code per role, CPU a gate call, bytes
a code in Redis and in PostgreSQL, rows a code, the rebuild rate; cluster.json: the same on a
Redis Cluster, per node). `tracegate loadtest scale-model` rewrites the tables between SCALE.md's
markers from whatever those files hold now, so the model follows every new run; the prose
around the markers is written by hand and reads the tables.

Every row shows its arithmetic. What is not measured here is an assumption, listed as such."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SCALE_MD = Path(__file__).resolve().parent.parent / "SCALE.md"
BEGIN = "<!-- scale-model:begin (written by `tracegate loadtest scale-model`) -->"
END = "<!-- scale-model:end -->"

# --- the national figures ---------------------------------------------------------------
CODES_PER_DAY = 250_000_000  # 2.5亿
PEAK_CODES_PER_S = 30_000
INSTITUTIONS = 930_000
HISTORY_CODES = 100_000_000_000  # 1,000亿, passed in 2025

# --- assumptions (not measurable on one box; each is named where it is used) -------------------
UTILISATION = 0.5  # a core planned at half load: room for bursts, GC, a failed peer's share
CATCH_UP = 2.0  # the group must drain a backlog while the peak goes on: twice the peak
GROWTH = 2.0  # partitions fixed for years: twice what the peak needs today
RETENTION_DAYS = 7  # Kafka keeps a week: the replay source after a bad deploy or a lost set
KAFKA_REPLICAS = 3
REDIS_HEADROOM = 1.3  # fragmentation, rehashing, AOF-rewrite copy-on-write
REDIS_NODE_GB = 64  # maxmemory of one primary (a 96-128 GB host)
HOT_MONTHS = 12  # the hot set's window of first sights (SCALE.md says why)
CODES_PER_BUCKET = 64  # settings.py: what a bucket should hold
PG_COPIES = 2  # primary + synchronous standby
PG_WORKER_TB = 4.0  # data one Citus worker (or one native primary) is planned to hold
DAYS_PER_MONTH = 365 / 12


class Missing(LookupError):
    """A figure the results do not hold: its benchmark has not run, or a rewrite of the load
    test renamed its key. The table that needs it says so instead of the model failing."""

    def __init__(self, path: str, source: str = "latest.json") -> None:
        super().__init__(f"{source} has no `{path}`")


def _at(data: Any, path: str) -> Any:
    """`data`'s value at a dotted path (`gate.rates.0.cpu_us_per_call.api`), None if absent."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _number(data: Any, path: str, source: str) -> float:
    value = _at(data, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Missing(path, source)
    return float(value)


@dataclass(frozen=True)
class Inputs:
    """The per-unit figures, read by path from the results files as each table needs them
    (every accessor raises Missing, naming the path, for a figure the files lack)."""

    latest: dict[str, Any]
    cluster: dict[str, Any] | None  # cluster.json, when a cluster run exists

    def figure(self, path: str) -> float:
        return _number(self.latest, path, "latest.json")

    def stream_cpu_us(self, role: str) -> float:
        """CPU a code of one role (consumers, redis, postgres...), stream with 1 consumer."""
        return self.figure(f"stream.cpu_us_per_code.{role}")

    def gate_cpu_us(self, role: str) -> float:
        """CPU a gate call of one role at the gate's first (lowest) rate."""
        return self.figure(f"gate.rates.0.cpu_us_per_call.{role}")

    gate_codes_per_call = 3  # loadtest/gateload.py: one line of 3 codes a settlement

    @property
    def redis_bytes_per_code(self) -> float:
        return self.figure("memory.bytes_per_code")

    @property
    def rebuild_codes_per_s(self) -> float:
        return self.figure("rebuild.codes_per_s")

    @property
    def codes_per_settlement(self) -> float:
        return self.figure("stream.workload.codes") / self.figure("stream.workload.settlements")

    @property
    def events_per_code(self) -> float:
        return self.figure("stream.workload.events") / self.figure("stream.workload.codes")

    @property
    def record(self) -> tuple[dict[str, Any] | None, str]:
        return _first_with(self.latest, self.cluster, "record")

    @property
    def record_bytes_per_code(self) -> float | None:
        record = self.record[0]
        return None if record is None else _at(record, "bytes_per_code")

    @property
    def record_rows_per_code(self) -> dict[str, float]:
        rows = _at(self.record[0], "rows_per_code")
        return rows if isinstance(rows, dict) else {}

    @property
    def record_tables(self) -> tuple[str, ...]:
        """The tables whose bytes the record figure counts."""
        tables = _at(self.record[0], "tables")
        return tuple(name for name, table in (tables or {}).items() if _at(table, "bytes"))

    @property
    def event_bytes_per_code(self) -> float | None:
        value: float | None = _first_with(self.latest, self.cluster, "event_bytes_per_code")[0]
        return value

    @property
    def sources(self) -> dict[str, str]:
        command = _at(self.latest, "meta.command")
        return {"per-unit": "latest.json" + (f" ({command})" if command else ""),
                "record": self.record[1],
                "events": _first_with(self.latest, self.cluster, "event_bytes_per_code")[1],
                "cluster": "cluster.json" if self.cluster else "no cluster run"}


def load(results: Path = RESULTS) -> Inputs:
    return Inputs(_read(results / "latest.json") or {}, _read(results / "cluster.json"))


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else None


def _first_with(latest: dict[str, Any], cluster: dict[str, Any] | None, key: str
                ) -> tuple[Any, str]:
    """A stream figure from latest.json, else from the cluster run (the same measurement on
    the same workload; only Redis differs), else None."""
    for name, results in (("latest.json", latest), ("cluster.json", cluster)):
        value = _at(results, f"stream.{key}")
        if value is not None:
            return value, name
    return None, "not measured yet"


# --- the arithmetic ------------------------------------------------------------------------------


def n(value: float, digits: int = 0) -> str:
    """A figure as the tables print it."""
    return f"{value:,.{digits}f}"


def ceil_to(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def rates(i: Inputs) -> dict[str, float]:
    avg = CODES_PER_DAY / 86_400
    return {"avg_codes_s": avg, "peak_codes_s": PEAK_CODES_PER_S,
            "peak_calls_s": PEAK_CODES_PER_S / i.codes_per_settlement,
            "peak_events_s": PEAK_CODES_PER_S * i.events_per_code,
            "codes_year": CODES_PER_DAY * 365.0,
            "codes_month": CODES_PER_DAY * DAYS_PER_MONTH}


def consumers(i: Inputs) -> dict[str, float]:
    per_code = i.stream_cpu_us("consumers")
    cores = PEAK_CODES_PER_S * per_code / 1e6
    per_process = 1e6 / per_code  # a consumer process is one Python thread: one core at most
    peak = math.ceil(PEAK_CODES_PER_S / (per_process * UTILISATION))
    catch_up = math.ceil(PEAK_CODES_PER_S * CATCH_UP / per_process)
    return {"us": per_code, "cores": cores, "per_process": per_process, "peak": peak,
            "catch_up": catch_up, "processes": max(peak, catch_up)}


def kafka(i: Inputs) -> dict[str, float | None]:
    processes = consumers(i)["processes"]
    partitions = ceil_to(processes * GROWTH, 6)
    per_code = i.event_bytes_per_code
    day = None if per_code is None else CODES_PER_DAY * per_code
    return {"partitions": partitions, "processes": processes, "bytes_per_code": per_code,
            "peak_mb_s": None if per_code is None else PEAK_CODES_PER_S * per_code / 1e6,
            "day_gb": None if day is None else day / 1e9,
            "retained_tb": None if day is None else day * RETENTION_DAYS * KAFKA_REPLICAS / 1e12}


def api(i: Inputs) -> dict[str, float]:
    calls = rates(i)["peak_calls_s"]
    per_call = i.gate_cpu_us("api")
    cores = calls * per_call / 1e6
    return {"calls": calls, "us": per_call, "cores": cores,
            "workers": math.ceil(cores / UTILISATION)}


def redis(i: Inputs) -> dict[str, float]:
    per_code = i.redis_bytes_per_code
    hot_codes = rates(i)["codes_month"] * HOT_MONTHS
    hot_tb = hot_codes * per_code / 1e12
    all_tb = HISTORY_CODES * per_code / 1e12
    primaries = math.ceil(hot_tb * 1e3 * REDIS_HEADROOM / REDIS_NODE_GB)
    bits = math.ceil(math.log2(hot_codes / (CODES_PER_BUCKET * 16_384)))
    cpu = (PEAK_CODES_PER_S * i.stream_cpu_us("redis")
           + rates(i)["peak_calls_s"] * i.gate_cpu_us("redis")) / 1e6
    return {"bytes": per_code, "hot_codes": hot_codes, "hot_tb": hot_tb, "all_tb": all_tb,
            "year_tb": rates(i)["codes_year"] * per_code / 1e12, "primaries": primaries,
            "bucket_bits": bits, "cores": cpu,
            "rebuild_h_all": HISTORY_CODES / i.rebuild_codes_per_s / 3600,
            "rebuild_h_hot": hot_codes / i.rebuild_codes_per_s / 3600,
            "rebuild_h_node": hot_codes / primaries / i.rebuild_codes_per_s / 3600}


def postgres(i: Inputs) -> dict[str, float | None]:
    year = rates(i)["codes_year"]
    per_code = i.record_bytes_per_code
    year_tb = None if per_code is None else year * per_code / 1e12
    events = i.record_rows_per_code.get("code_events")
    cpu = (PEAK_CODES_PER_S * i.stream_cpu_us("postgres")
           + rates(i)["peak_calls_s"] * i.gate_cpu_us("postgres")) / 1e6
    return {"bytes": per_code, "year_tb": year_tb,
            "stored_tb": None if year_tb is None else year_tb * PG_COPIES,
            "workers": None if year_tb is None else math.ceil(year_tb / PG_WORKER_TB),
            "month_rows": None if events is None else rates(i)["codes_month"] * events,
            "cores": cpu}


# --- the tables ----------------------------------------------------------------------------------


def markdown(i: Inputs) -> str:
    sections = (("National rates", _rates_table), ("Kafka", _kafka_table),
                ("Consumers and API workers", _compute_table),
                ("Redis (the first-seen set)", _redis_table),
                ("PostgreSQL (the record)", _postgres_table))
    parts = [_sources(i), *(_section(title, table, i) for title, table in sections),
             _section_or_none(_cluster_table, i), _assumptions()]
    return "\n\n".join(part for part in parts if part) + "\n"


def _section(title: str, table: Callable[[Inputs], str], i: Inputs) -> str:
    """A table, or in its place what it lacks: the model never fails for a missing figure."""
    try:
        return f"### {title}\n\n{table(i)}"
    except Missing as missing:
        return (f"### {title}\n\nNot computed: {missing} (a run of `tracegate loadtest "
                "all`, or of the benchmark that writes it, puts it there).")


def _section_or_none(table: Callable[[Inputs], str], i: Inputs) -> str:
    try:
        return table(i)
    except Missing as missing:
        return f"Per-node table not computed: {missing}."


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _sources(i: Inputs) -> str:
    return ("Inputs: per-unit figures from `loadtest/results/" + i.sources["per-unit"] + "`; "
            f"PostgreSQL bytes and rows a code from {i.sources['record']}; topic bytes a code "
            f"from {i.sources['events']}; per-node figures from {i.sources['cluster']}.")


def _rates_table(i: Inputs) -> str:
    r = rates(i)
    return _table(("figure", "arithmetic", "value"), [
        ("codes/s, average", f"{n(CODES_PER_DAY)} / 86,400 s", n(r["avg_codes_s"])),
        ("codes/s, peak", "the issue's figure", n(PEAK_CODES_PER_S)),
        ("codes a settlement", "stream workload: codes / settlements",
         n(i.codes_per_settlement, 2)),
        ("settlements/s at peak (gate calls)",
         f"{n(PEAK_CODES_PER_S)} / {n(i.codes_per_settlement, 2)}", n(r["peak_calls_s"])),
        ("settlement-topic events/s at peak",
         f"{n(PEAK_CODES_PER_S)} × {n(i.events_per_code, 3)} events a code",
         n(r["peak_events_s"])),
        ("codes a year", f"{n(CODES_PER_DAY)} × 365", n(r["codes_year"])),
        ("codes a month", f"{n(CODES_PER_DAY)} × {n(DAYS_PER_MONTH, 1)}", n(r["codes_month"])),
    ])


def _kafka_table(i: Inputs) -> str:
    k = kafka(i)
    rows = [("settlement partitions",
             f"{k['processes']:.0f} consumer processes (below) × {GROWTH:g} growth, "
             "rounded up to a multiple of 6", n(k["partitions"] or 0))]
    if k["bytes_per_code"] is not None:
        rows += [
            ("topic bytes a code", "JSON values produced / codes (stream workload)",
             n(k["bytes_per_code"], 1)),
            ("ingress MB/s at peak", f"{n(PEAK_CODES_PER_S)} × {n(k['bytes_per_code'], 1)} B",
             n(k["peak_mb_s"] or 0, 1)),
            ("a day's log, GB", f"{n(CODES_PER_DAY)} × {n(k['bytes_per_code'], 1)} B",
             n(k["day_gb"] or 0, 1)),
            (f"retained ({RETENTION_DAYS} days × RF {KAFKA_REPLICAS}), TB",
             f"{n(k['day_gb'] or 0, 1)} GB × {RETENTION_DAYS} × {KAFKA_REPLICAS}",
             n(k["retained_tb"] or 0, 2))]
    return _table(("figure", "arithmetic", "value"), rows)


def _compute_table(i: Inputs) -> str:
    c, a = consumers(i), api(i)
    return _table(("figure", "arithmetic", "value"), [
        ("consumer CPU a code, µs", "stream, 1 consumer: consumers' share", n(c["us"], 1)),
        ("consumer cores at peak", f"{n(PEAK_CODES_PER_S)} × {n(c['us'], 1)} µs",
         n(c["cores"], 2)),
        ("one process's ceiling, codes/s", f"1 core / {n(c['us'], 1)} µs", n(c["per_process"])),
        ("processes for the peak", f"{n(PEAK_CODES_PER_S)} / ({n(c['per_process'])} × "
         f"{UTILISATION:g})", n(c["peak"])),
        ("processes to catch up", f"{CATCH_UP:g} × {n(PEAK_CODES_PER_S)} / "
         f"{n(c['per_process'])}", n(c["catch_up"])),
        ("gate API CPU a call, µs",
         f"gate at {i.gate_codes_per_call} codes a call: API workers' share", n(a["us"])),
        ("API cores at peak", f"{n(a['calls'])} calls/s × {n(a['us'])} µs", n(a["cores"], 1)),
        ("API workers (one per core)", f"{n(a['cores'], 1)} / {UTILISATION:g}",
         n(a["workers"])),
    ])


def _redis_table(i: Inputs) -> str:
    r = redis(i)
    return _table(("figure", "arithmetic", "value"), [
        ("bytes a code", "memory benchmark", n(r["bytes"], 2)),
        ("all history, TB", f"{n(HISTORY_CODES)} × {n(r['bytes'], 2)} B", n(r["all_tb"], 2)),
        ("growth a year, TB", f"{n(rates(i)['codes_year'])} × {n(r['bytes'], 2)} B",
         n(r["year_tb"], 2)),
        (f"hot set ({HOT_MONTHS} months of first sights), TB",
         f"{n(r['hot_codes'])} codes × {n(r['bytes'], 2)} B", n(r["hot_tb"], 2)),
        ("primaries", f"{n(r['hot_tb'], 2)} TB × {REDIS_HEADROOM:g} / {REDIS_NODE_GB} GB",
         n(r["primaries"])),
        ("TRACEGATE_HOTSET_BUCKET_BITS (16,384 slot groups)",
         f"⌈log2({n(r['hot_codes'])} / ({CODES_PER_BUCKET} × 16,384))⌉", n(r["bucket_bits"])),
        ("Redis cores at peak", f"{n(PEAK_CODES_PER_S)} × {i.stream_cpu_us('redis')} µs + "
         f"{n(rates(i)['peak_calls_s'])} × {i.gate_cpu_us('redis')} µs", n(r["cores"], 2)),
        ("rebuild of the hot set, one process, h",
         f"{n(r['hot_codes'])} / {n(i.rebuild_codes_per_s)} codes/s", n(r["rebuild_h_hot"], 1)),
        ("rebuild of one primary's share, h",
         f"{n(r['hot_codes'] / r['primaries'])} / {n(i.rebuild_codes_per_s)} codes/s",
         n(r["rebuild_h_node"], 2)),
    ])


def _postgres_table(i: Inputs) -> str:
    p = postgres(i)
    rows = [(f"rows a code: {name}", "stream workload's record / codes", n(value, 3))
            for name, value in sorted(i.record_rows_per_code.items()) if value]
    if p["bytes"] is not None:
        rows += [
            ("bytes a code (heap, indexes, TOAST)",
             f"{' + '.join(i.record_tables)} / codes", n(p["bytes"], 1)),
            ("a year, TB (primary)", f"{n(rates(i)['codes_year'])} × {n(p['bytes'], 1)} B",
             n(p["year_tb"] or 0, 1)),
            (f"a year, TB stored ({PG_COPIES} copies)", f"{n(p['year_tb'] or 0, 1)} × {PG_COPIES}",
             n(p["stored_tb"] or 0, 1)),
            (f"workers for a year ({PG_WORKER_TB:g} TB each)",
             f"{n(p['year_tb'] or 0, 1)} / {PG_WORKER_TB:g}", n(p["workers"] or 0))]
    if p["month_rows"] is not None:
        rows.append(("code_events rows a month", f"{n(rates(i)['codes_month'])} × "
                     f"{n(i.record_rows_per_code['code_events'], 3)}", n(p["month_rows"])))
    rows.append(("PostgreSQL cores at peak", f"{n(PEAK_CODES_PER_S)} × "
                 f"{i.stream_cpu_us('postgres')} µs + {n(rates(i)['peak_calls_s'])} × "
                 f"{i.gate_cpu_us('postgres')} µs", n(p["cores"] or 0, 2)))
    return _table(("figure", "arithmetic", "value"), rows)


def _cluster_table(i: Inputs) -> str:
    if i.cluster is None:
        return ""

    def figure(path: str) -> float:
        return _number(i.cluster, path, "cluster.json")

    cpu = _at(i.cluster, "stream.cpu_us_per_code") or {}
    nodes = {role: float(us) for role, us in cpu.items() if role.startswith("redis-")}
    if not nodes:
        raise Missing("stream.cpu_us_per_code.redis-1", "cluster.json")
    total = sum(nodes.values())
    rows = [(str(role), n(us, 1), f"{us / total:.0%}" if total else "") for role, us in
            sorted(nodes.items())]
    rows.append(("all nodes", n(total, 1), f"single Redis: {i.stream_cpu_us('redis')} µs"))
    head = (f"### Per node, measured on a {figure('meta.redis_primaries'):.0f}-primary Redis "
            f"Cluster\n\n`{_at(i.cluster, 'meta.command')}`: stream "
            f"{n(figure('stream.codes_per_s'))} codes/s with 1 consumer, "
            f"{n(figure('stream.codes_per_s_2_consumers'))} with 2, correct: "
            f"{_at(i.cluster, 'stream.correct')}; gate at {figure('gate.rates.0.rate'):.0f}/s "
            f"p99 {_at(i.cluster, 'gate.rates.0.p99_ms')} ms, "
            f"{figure('gate.rates.0.errors'):.0f} errors. Redis CPU a code by node:\n\n")
    return head + _table(("node", "µs a code", "share"), rows)


def _assumptions() -> str:
    return "### Assumptions (not measurable on one box)\n\n" + "\n".join([
        f"- a core is planned at {UTILISATION:.0%} load; a consumer group catches up at "
        f"{CATCH_UP:g}× the peak; partitions are sized {GROWTH:g}× today's need",
        f"- Kafka keeps {RETENTION_DAYS} days at replication factor {KAFKA_REPLICAS}",
        f"- a Redis primary holds {REDIS_NODE_GB} GB, with {REDIS_HEADROOM:g}× headroom over "
        "the measured bytes; every primary has a replica (memory × 2)",
        f"- the hot set holds {HOT_MONTHS} months of first sights; a bucket ~{CODES_PER_BUCKET}"
        " codes",
        f"- PostgreSQL keeps {PG_COPIES} copies (primary + synchronous standby), "
        f"{PG_WORKER_TB:g} TB a worker",
        "- the per-unit CPU is that of one shared 2-core box, every server on it: a dedicated"
        " server's share is lower, so these counts are upper bounds",
    ])


def write_scale_md(path: Path = SCALE_MD, results: Path = RESULTS) -> Path:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no scale-model markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{markdown(load(results))}{END}{tail}")
    return path
