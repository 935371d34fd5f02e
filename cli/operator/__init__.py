"""The operator commands of `tracegate`: institutions, keys, code, flags, dlq, partitions.

Most call the API over HTTP (TRACEGATE_API_URL, TRACEGATE_API_KEY): it is what an operator on
an insurer's closed network can reach, it checks the key's role, and it keeps its caches right.
Three work on the servers directly because the API has no part in them or would only slow
them: `institutions import` (a bulk load, one statement per thousand rows), `dlq` (Kafka's
dead-letter topic) and `partitions ensure` (DDL)."""

from __future__ import annotations

from cli.operator import codes, dlq, flags, institutions, keys, parsing, partitions


def register(sub: parsing.SubParsers) -> None:
    for group in (institutions, keys, codes, flags, dlq, partitions):
        group.register(sub)
