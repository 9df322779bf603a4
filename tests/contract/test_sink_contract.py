"""The Sink contract (sinks/base.py), run against every sink and its real peer:
a batch is delivered whole; an empty batch sends nothing; close is idempotent and final;
a peer that is down fails retriably, a peer that refuses the batch fails non-retriably."""

from __future__ import annotations

import time

import pytest

from sinks.base import Sink, SinkError
from tests.contract.harnesses import Harness
from tests.support.events import signed_examples

pytestmark = pytest.mark.integration

SINKS = [
    "memory_harness",
    "stdout_harness",
    "otlp_grpc_harness",
    "otlp_http_harness",
    "kafka_structured_harness",
    "kafka_binary_harness",
]
# A failure must surface within the sink's own timeout (3-5 s in the harnesses), not hang.
FAILURE_DEADLINE_S = 15.0


@pytest.fixture(params=SINKS)
def harness(request: pytest.FixtureRequest) -> Harness:
    """Each sink's harness, by its fixture."""
    found = request.getfixturevalue(request.param)
    assert isinstance(found, Harness)
    return found


async def test_a_batch_is_delivered_whole(harness: Harness) -> None:
    sink = harness.make()
    assert isinstance(sink, Sink)
    batch = signed_examples()[:10]

    await sink.send(batch)

    assert sorted(await harness.peer_ids(len(batch))) == sorted(event.id for event in batch)


async def test_an_empty_batch_sends_nothing(harness: Harness) -> None:
    sink = harness.make()
    marker = signed_examples()[:1]

    await sink.send([])
    await sink.send(marker)  # anything the empty send produced would arrive before it

    assert await harness.peer_ids(1) == [marker[0].id]


async def test_close_twice_then_send_fails_for_good(harness: Harness) -> None:
    used, unused = harness.make(), harness.make()
    await used.send(signed_examples()[:1])

    for sink in (used, unused):
        await sink.aclose()
        await sink.aclose()
        with pytest.raises(SinkError) as caught:
            await sink.send(signed_examples()[:1])
        assert not caught.value.retriable
        assert caught.value.reason == "closed"


async def test_a_peer_that_is_down_fails_retriably(harness: Harness) -> None:
    sink = harness.unreachable()
    started = time.monotonic()

    with pytest.raises(SinkError) as caught:
        await sink.send(signed_examples()[:3])

    assert caught.value.retriable
    assert caught.value.reason
    assert " " not in caught.value.reason
    assert time.monotonic() - started < FAILURE_DEADLINE_S


async def test_a_batch_the_peer_refuses_fails_non_retriably(harness: Harness) -> None:
    sink, batch = await harness.refusing()
    started = time.monotonic()

    with pytest.raises(SinkError) as caught:
        await sink.send(batch)

    assert not caught.value.retriable
    assert caught.value.reason
    assert " " not in caught.value.reason
    assert time.monotonic() - started < FAILURE_DEADLINE_S
