"""Output checks in worker processes. Decoding and verifying is nearly all of an audit's CPU
time and each record is checked on its own, so chunks of output lines are checked by a pool
of processes and handed back in order to the one process that does the accounting."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from pipeline.audit.trail import CheckedOutput, check_output
from pipeline.signing.verification import Verifier

Tag = TypeVar("Tag")
# A picklable function giving each worker its own verifier (keys are loaded in the worker:
# an Ed25519 public key object does not pickle).
VerifierFactory = Callable[[], Verifier]

_worker_verifier: Verifier | None = None


class OutputChecker:
    """`check_output` over chunks of lines, in `jobs` processes (in this one when 1)."""

    def __init__(self, make_verifier: VerifierFactory, jobs: int) -> None:
        self._make_verifier = make_verifier
        self._jobs = jobs

    def checked(self, chunks: Iterable[tuple[Tag, list[bytes]]]
                ) -> Iterator[tuple[Tag, list[CheckedOutput]]]:
        """Each chunk's tag with the checks of its lines, in the order given."""
        if self._jobs <= 1:
            verifier = self._make_verifier()
            for tag, lines in chunks:
                yield tag, [check_output(verifier, line) for line in lines]
            return
        with ProcessPoolExecutor(self._jobs, initializer=_start_worker,
                                 initargs=(self._make_verifier,)) as pool:
            # Two chunks a worker in flight: every worker busy, memory bounded.
            pending: deque[tuple[Tag, Future[list[CheckedOutput]]]] = deque()
            for tag, lines in chunks:
                pending.append((tag, pool.submit(_check_chunk, lines)))
                if len(pending) >= 2 * self._jobs:
                    done_tag, done = pending.popleft()
                    yield done_tag, done.result()
            while pending:
                done_tag, done = pending.popleft()
                yield done_tag, done.result()


def _start_worker(make_verifier: VerifierFactory) -> None:
    global _worker_verifier
    _worker_verifier = make_verifier()


def _check_chunk(lines: list[bytes]) -> list[CheckedOutput]:
    verifier = _worker_verifier
    if verifier is None:  # the pool's initializer always runs first
        raise RuntimeError("worker started without a verifier")
    return [check_output(verifier, line) for line in lines]
