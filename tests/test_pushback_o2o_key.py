"""An opt-out from the centre while the hub's O2O key file is missing (a database restored
without it): the opt-out itself is applied at once, the O2O part (the keyed stop-list, segment
rows and files) waits and is done at the first pull after the key is back. Real SQLite file."""

from __future__ import annotations

from pathlib import Path

from footfall.cloud_sync import outbox, pushback_items
from footfall.hub.o2o import privacy
from tests.test_sync import NOW, SITE, device_id, make_hub, phone_hash


def test_optout_without_the_o2o_key_is_applied_and_its_o2o_part_deferred(tmp_path: Path) -> None:
    conn = make_hub(tmp_path / "hub.db", n_devices=6)
    privacy.attach(conn)
    key_file = privacy.key_path(conn)
    saved = key_file.read_bytes()
    key_file.unlink()
    opted = device_id(1)
    with conn:
        res = pushback_items.apply_items(conn, [{"kind": "optout", "device": opted, "ts": NOW}], SITE, now=NOW)
    assert res.optouts == 1 and res.rejected == 0
    assert conn.execute("SELECT count(*) FROM devices WHERE device_key = ?", (opted,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM visits WHERE device_key = ? AND partner_hash IS NOT NULL",
                        (opted,)).fetchone()[0] == 0  # fmt: skip
    assert opted in outbox.get_state(conn, pushback_items.O2O_PENDING)
    with conn:
        assert pushback_items.retry_o2o_forget(conn, NOW + 60) == 0  # still no key: still waiting
    key_file.write_bytes(saved)
    with conn:
        assert pushback_items.retry_o2o_forget(conn, NOW + 120) >= 1
    assert outbox.get_state(conn, pushback_items.O2O_PENDING) == "[]"
    stop = {r[0] for r in conn.execute("SELECT subject FROM o2o_stoplist")}
    assert privacy.attach(conn).key(phone_hash(opted)) in stop
