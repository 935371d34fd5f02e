"""`tracegate dev` and the test suite's servers: PostgreSQL, Redis and a Kafka-protocol broker
started from pip-installed binaries on free loopback ports, and the stack that runs on them."""
