"""Stopping the nemesis's own Kafka clients, which may outlive their broker."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


async def stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient
                       ) -> None:
    """A client of a stopped broker may take long to stop, or fail to: it is being
    replaced, or no longer needed."""
    with contextlib.suppress(KafkaError, TimeoutError, OSError):
        async with asyncio.timeout(15):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()
