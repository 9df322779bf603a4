"""SIGHUP on a `govpipe run` subprocess (stdin source): the signing key rotates without a
restart, a config that cannot be applied is refused with a log line and the running one
kept, nothing is lost and the counters reconcile. The process never dies of the signal."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
from pathlib import Path

from pipeline.signing.signers import HmacSigner, hmac_key_id
from tests.support.events import event_value
from tests.support.identities import assert_reconciled
from tests.support.metrics import metric_value
from tests.support.processes import GOVPIPE, FedGovpipe, govpipe_env, read_deadletters
from tests.support.waiting import eventually

BATCH = 5


def write_key(path: Path, key: bytes) -> None:
    """Replace the key file the way a rotation does: a new file moved into place."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(base64.b64encode(key).decode() + "\n")
    os.replace(temp, path)


async def hang_up(child: FedGovpipe, outcome: str) -> dict[str, object]:
    """SIGHUP the child and wait for the log line of the reload's `outcome`."""
    before = len(child.logged(outcome))
    child.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await eventually(lambda: len(child.logged(outcome)) > before, 30)
    assert child.running
    return child.logged(outcome)[-1]


async def feed_batch(child: FedGovpipe, number: int) -> None:
    """Feed the `number`th batch of events and wait until stdout has them all."""
    await child.feed([event_value(n, "hup") for n in range(number * BATCH,
                                                          (number + 1) * BATCH)])
    await eventually(lambda: len(child.lines()) == (number + 1) * BATCH, 30)


async def test_sighup_rotates_the_key_and_refuses_what_it_cannot_apply(tmp_path: Path) -> None:
    assert GOVPIPE.exists(), "the govpipe console script is not installed in this environment"
    old_key, new_key = secrets.token_bytes(32), secrets.token_bytes(32)
    key_file, config = tmp_path / "signing.key", tmp_path / "govpipe.toml"
    write_key(key_file, old_key)
    good_config = (f'[signing]\nkey_file = "{key_file}"\n'
                   f'[deadletter]\npath = "{tmp_path / "dlq"}"\n')
    config.write_text(good_config)
    env = govpipe_env(old_key)
    del env["GOVPIPE_SIGNING_KEY"]  # the key comes from the file only
    child = FedGovpipe(env, tmp_path, "hup", [str(GOVPIPE), "run", "--config", str(config)])
    try:
        await child.start()
        await feed_batch(child, 0)

        write_key(key_file, new_key)
        reloaded = await hang_up(child, "configuration reloaded")
        assert reloaded["key_id"] == hmac_key_id(new_key)
        await feed_batch(child, 1)

        config.write_text(good_config + "[source\n")
        assert "invalid TOML" in str((await hang_up(child, "reload refused"))["message"])
        config.write_text(good_config + "[source]\nmax_event_bytes = 4096\n")
        refused = str((await hang_up(child, "reload refused"))["message"])
        assert "need a restart: source.max_event_bytes" in refused
        config.write_text(good_config)
        key_file.write_text("not a key\n")
        assert "signing.key_file" in str((await hang_up(child, "reload refused"))["message"])
        await feed_batch(child, 2)

        scrape = await child.settled_scrape()
        assert_reconciled(scrape)
        assert metric_value(scrape, "govpipe_source_records_total") == 3 * BATCH
        assert metric_value(scrape, "govpipe_sink_delivered_total", sink="stdout") == 3 * BATCH
        assert await child.end_input() == 0
    finally:
        await child.ensure_stopped()

    events = [json.loads(line) for line in child.lines()]
    assert [event["id"] for event in events] == [f"hup-{n:08d}" for n in range(3 * BATCH)]
    old, new = HmacSigner(old_key), HmacSigner(new_key)
    assert all(old.verify(event) for event in events[:BATCH])
    assert all(new.verify(event) for event in events[BATCH:])
    assert not read_deadletters(tmp_path / "dlq")
    log = child.log.read_text()
    assert base64.b64encode(new_key).decode() not in log
    assert "Traceback" not in log
