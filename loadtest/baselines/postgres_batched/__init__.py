"""Baseline (d): the stream's durable work with PostgreSQL alone, as a small consumer
(`python -m loadtest.baselines.postgres_batched`, configured by the same TRACEGATE_* settings
as `tracegate consume`).

A batch is what one poll returns (up to `consumer_max_batch`, 5,000 events). Per batch, in one
transaction: which events the record holds already (redeliveries: skipped); every valid code
COPYed into a temporary staging table (ON COMMIT DELETE ROWS); first-seen decided by one
`INSERT … SELECT DISTINCT ON (code) … ON CONFLICT (code) DO NOTHING` into code_claims, which
also returns the claims that were there before (the few codes that are not new); the batch
decided in Kafka order in memory over those claims (rules.py); corrections to the claims the
rules made (a line refused after all, units added to an opened pack, a reversal) by one
statement each; settlements, code_events and flags by COPY; reversals and institution_stats by
one statement each. Then the flags are published to the flags topic and marked published, and
only then are the offsets committed. No Redis anywhere.

The rows are the real migrations' tables (settlements, code_claims, code_events, flags,
reversals, institution_stats), in a database of their own, so their counts compare with
tracegate's. The rules are those the load test's workload needs (loadtest/workload.py), and it
is checked against that workload's ground truth. What it leaves out, so its speed is read
honestly (each is work tracegate does and this does not):
- gate-sourced events (`source: gate` with the gate's decision and effects: dead-lettered
  here), partial reversals (`line_nos`), a second reversal of one settlement, body-hash
  conflicts (a settlement id sent again with another body: taken as a redelivery),
  `duplicate_policy: flag`; reasons carry no messages (the record's lines and answers are
  ~2 % shorter than tracegate's);
- the first-seen set and everything about it (no Redis: no claim heal, no rebuild, no gate
  confirmations, no voided gate attempts);
- two consumers racing for one code are not arbitrated beyond PostgreSQL's unique key (a race
  fails the batch, which is retried); no rebalance listener (a batch whose partitions were
  revoked still commits, and the commit fails harmlessly); no metrics, no heartbeat file, no
  readiness announcements, no partition upkeep for code_events.
A redelivered batch is exact as tracegate's is: what the record holds is skipped, and flags
recorded but never published are published again."""
