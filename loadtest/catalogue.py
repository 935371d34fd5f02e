"""What each benchmark of `tracegate loadtest` measures, for its --help (kept apart from
loadtest/cli.py so `tracegate --help` need not import the benchmarks and their servers)."""

from __future__ import annotations

import textwrap

BENCHMARKS = {
    "stream": "settlement events through real `tracegate consume` processes: trace codes per "
              "second with 1 and 2 consumers (produce -> every offset committed, i.e. recorded "
              "in PostgreSQL and flags acknowledged), flag latency at 20,000 codes/s and at half "
              "of one consumer's capacity, CPU per code of every process; checked against the "
              "workload's ground truth (correct)",
    "gate": "POST /v1/settlements on the real API (`tracegate api`, 2 uvicorn workers) under "
            "open-loop load from a separate process at fixed rates (500 to 4,000 calls/s), "
            "then POST /v1/codes/verify at 500/s: latency percentiles (of every call and of "
            "the answered ones), sheds (503 OVERLOADED) apart from errors, every answer "
            "checked against the workload's ground truth (correct), and the CPU a call costs "
            "every process (server_sum: API, Redis, PostgreSQL, Kafka); then the gate's floor "
            "(a bare ASGI app on the same uvicorn, Redis and Kafka doing only what no gate can "
            "skip) at 500 and 2,000/s and its verify, for the same figures",
    "memory": "Redis bytes per code in the first-seen set, written through the production "
              "store and Lua script (used_memory delta / codes)",
    "rebuild": "codes per second rebuilding the first-seen set from PostgreSQL's code_claims "
               "with the production rebuild",
    "baselines": "the same workload other ways, with tracegate's one consumer beside them for "
                 "the ratios: (a) a Redis key per code with SET NX, (b) PostgreSQL only with "
                 "INSERT ... ON CONFLICT per code, (c) Quix Streams with its RocksDB state "
                 "store, (c') the same with its changelog topic (at-least-once), (d) a batched "
                 "consumer doing the stream's durable work with PostgreSQL alone (COPY-staged "
                 "batches, first-seen by INSERT ... ON CONFLICT, the same record rows, flags "
                 "published, offsets after the commit); each scored against the ground truth "
                 "(flags expected, found, matched, missed, false, doubled), with the CPU a code "
                 "cost its processes",
    "all": "every benchmark above (and the redis-benchmark ceiling) on one set of servers; "
           "writes loadtest/results/latest.json and latest.md and the README's tables",
    "nhsa-import": "`tracegate import nhsa` of a generated platform export (3505/3505A "
                   "messages) onto the settlements topic of its own servers: codes produced per "
                   "second (target 50,000), checked against the generator's ground truth; not "
                   "part of `all`; writes loadtest/results/nhsa-import.json",
    "cluster": "the gate and the stream on a Redis Cluster of --redis-primaries N (3) primaries, "
               "each node's CPU a role of its own; writes loadtest/results/cluster.json and "
               "cluster.md",
    "scale-model": "runs nothing: writes SCALE.md's tables (the capacity model for the national "
                   "figures) from loadtest/results/latest.json and cluster.json",
}


def help_text() -> str:
    width = max(len(name) for name in BENCHMARKS) + 4
    lines = [textwrap.fill(text, 96, initial_indent=f"  {name:<{width - 2}}",
                           subsequent_indent=" " * width)
             for name, text in BENCHMARKS.items()]
    return ("benchmarks (each runs its own embedded servers; needs pip install -e "
            "'.[dev,bench]'):\n" + "\n".join(lines) +
            "\n\n--quick runs small sizes (under 3 minutes); without it, 3 repeats at full size.")
