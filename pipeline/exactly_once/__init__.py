"""Exactly-once into Kafka (`sinks.kafka.exactly_once`): the Kafka sink's records, the Kafka
dead-letter entries and the source offsets of one input partition commit in one Kafka
transaction.

- ``outbox``: what waits for its partition's next transaction (records, entries).
- ``producers``: the transactional producers, one per input partition.
- ``committer``: a transaction per partition and commit;
  what an abort, a timeout or a fencing leaves, and how it is resolved.
- ``tally``: how staged records are counted: delivered, or dropped with the reason.
- ``refusals``: a staged record the broker refuses as too large, set apart (failed and
  dead-lettered, or an entry's summary) so that the rest of its partition commits.
"""
