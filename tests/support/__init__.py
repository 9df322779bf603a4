"""What the test suites share; no suite imports another suite's files.

- ``infra/``: the real services (Kafka broker, OpenTelemetry Collector, Prometheus, a
  throwaway PKI), each a process in its own temp dir on free loopback ports.
- ``services``: a service for a fixture, started or the test fails.
- ``kafka_clients``: topics, producers, consumers and committed offsets on a broker.
- ``daemons``: an in-process Daemon on a real Kafka source.
- ``processes``: ``govpipe run`` as a subprocess, and where it writes.
- ``events``: test inputs (the examples, signed or numbered, garbage lines).
- ``fakes``: sinks for tests (MemorySink, FlakySink) and a hand-made signed event.
- ``metrics``: reading samples from a registry or a /metrics scrape.
- ``identities``: the reconciliation identities of a scrape.
- ``agent_os``: Agent OS's published verifier, the compatibility target.
- ``waiting``: waiting for a condition that cannot be subscribed to.
"""
