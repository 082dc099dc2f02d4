"""`footfall o2o run` as footfall-o2o.service runs it: the partner's key from a systemd
credential (``$CREDENTIALS_DIRECTORY/partner-key``), never from the command line, against the
real reference partner over HTTP. Without a key the pass fails with a non-zero exit, so the
timer's next tick retries it and the journal shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from footfall.hub import store
from footfall.hub.o2o import coupons, scenarios
from tests.test_o2o_e2e import PARTNER_KEY, day, make_hub, make_partner  # noqa: F401 (fixture)


def _run(db: Path, url: str, env: dict[str, str], now: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "footfall", "o2o", "run", "--db", str(db), "--partner-url", url, "--force",
         "--now", str(now), "--export-dir", str(db.parent / "exports")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_runner_reads_the_partner_key_from_a_systemd_credential(day, tmp_path: Path) -> None:  # noqa: F811
    _out, truth, msgs = day
    db, end = make_hub(tmp_path, msgs)
    partner, _pdb = make_partner(tmp_path, truth)
    try:
        conn = store.connect(db)
        sc = scenarios.Scenario(
            name="passersby", target="passersby", quiet_hours=None, coupon=coupons.Generator(kind="fixed", value=300)
        )
        scenarios.add(conn, sc, now=end - 3600)
        conn.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FOOTFALL_PARTNER", "CREDENTIALS"))}

        denied = _run(db, partner.url, env, end)
        assert denied.returncode == 1
        assert json.loads(denied.stdout.splitlines()[0])["status"] != "ok"

        creds = tmp_path / "creds"
        creds.mkdir(mode=0o700)
        (creds / "partner-key").write_text(PARTNER_KEY + "\n")
        ok = _run(db, partner.url, env | {"CREDENTIALS_DIRECTORY": str(creds)}, end + 60)
        assert ok.returncode == 0, ok.stderr
        result = json.loads(ok.stdout.splitlines()[0])
        assert result["status"] == "ok" and result["matched"] > 0
        assert PARTNER_KEY not in ok.stdout + ok.stderr
    finally:
        partner.stop()
