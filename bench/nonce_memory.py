"""Measures the memory one remembered nonce costs in `pipeline.inbound.nonces.NonceStore`,
and how fast `check_and_add` runs: `python bench/nonce_memory.py [COUNT]`.

Fills one store as a replica reading 5,000 signed records/s over the default window
would (uuid4 hex nonces, a few senders, expiries spread over 300 s on 4 partitions) and
prints the traced memory per nonce (tracemalloc: every allocation the store holds)."""

from __future__ import annotations

import sys
import time
import tracemalloc
import uuid

from pipeline.inbound.nonces import NonceStore, NonceVerdict

WINDOW_MS = 300_000


def main(count: int) -> None:
    nonces = [uuid.uuid4().hex for _ in range(count)]  # made before tracing starts
    senders = [f"agent-{n}" for n in range(8)]
    store = NonceStore(count, count)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for i, nonce in enumerate(nonces):
        ts = i * WINDOW_MS // count  # count records spread evenly over one window
        verdict = store.check_and_add(senders[i % 8], nonce, ts + WINDOW_MS, ts,
                                      ("governance.events", i % 4, i // 4))
        assert verdict is NonceVerdict.FRESH
    elapsed = time.perf_counter() - started
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"nonces {len(store)}, bytes per nonce {held / len(store):.0f}, "
          f"total {held / 2**20:.0f} MiB, check_and_add {elapsed / count * 1e6:.2f} us "
          "(traced)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_500_000)
