"""The machinery of the nemesis test (test_nemesis.py): `govpipe run` replicas whose stdout
goes through a pipe to a reader process the test can stop, a producer that outlives broker
outages, a seeded scheduler of overlapping faults, watchers of /metrics and of the group's
committed offsets, and the oracle that accounts for every input id at the end.

Single-fault tests miss losses that need two faults at once (a stalled sink *and* a
rebalance); here faults overlap at random, and the oracle only asks where every id went.

- ``journal``: every action with its time, printed as it happens.
- ``replicas``: the replicas, their settings and where they read, write and dead-letter.
- ``services``: the broker, the Collector and the dead-letter disk the faults act on.
- ``producer``: the input stream, kept going through broker outages.
- ``scrapes``, ``offsets``: the watchers of /metrics and of committed and end offsets.
- ``scheduler``: picking faults at random and running the ones with a duration.
- ``faults``: the faults themselves, and healing whatever is left down at the end.
- ``outputs``, ``verdict``: the oracle: every id that came out, and the findings.
"""
