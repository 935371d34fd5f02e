"""Fault injection (issue 5, items 1-3): consumers killed with SIGKILL, Redis losing the first-seen
set, the broker, PostgreSQL and Redis going away, each against a settlement stream whose
ground truth is known. Short forms run in the suite; `python -m tests.faults.soak` (or
TRACEGATE_SOAK=1) runs the issue's full figures."""
