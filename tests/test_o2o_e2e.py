"""O2O end to end, for real: a simulated store day -> edge agents -> hub DB -> scenario runs ->
the reference partner server over HTTP (uvicorn) -> SMS outbox -> POS redemptions over HTTP ->
report and ROMI. Plus: 50 concurrent redemptions of one code, and a partner that is down or slow.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from footfall.hub import auth, store
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many
from footfall.hub.o2o import coupons, pos, privacy, reports, runner, scenarios
from footfall.hub.o2o.partner import PartnerClient, PartnerConfig
from footfall.hub.o2o.web import create_app
from footfall.tools import partner_server
from footfall.tools.evaluate import hash_key_env
from tests.conftest import Served

KEY_HEX = "5a" * 32
PARTNER_KEY = "partner-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, dict, list[tuple[str, bytes]]]:
    """A simulated day replayed through real agents with partner hashing on: the visit messages."""
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig
    from footfall.edge_agent.pcapfile import PcapSource
    from footfall.tools.simulator import simulate_day

    out = tmp_path_factory.mktemp("day")
    truth = simulate_day(out, seed=11, scale=0.5, site="demo")
    msgs: list[tuple[str, bytes]] = []
    with hash_key_env(bytes.fromhex(KEY_HEX)):
        for s in truth["sensors"]:
            sid = s["id"]
            cfg = AgentConfig(site="demo", sensor=sid, partner_enabled=True, partner_mac_format="colon-upper")

            def sink(kind: str, payload: dict, sid: str = sid) -> None:
                if kind == "visit":
                    msgs.append((f"footfall/demo/{sid}/visit", json.dumps(payload).encode()))

            agent = Agent(cfg, sink)
            agent.process(PcapSource(out / f"{sid}.pcap"))
            agent.finish("end_of_capture")
    return out, truth, msgs


def make_hub(tmp_path: Path, msgs: list[tuple[str, bytes]]) -> tuple[Path, float]:
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    outcomes = ingest_many(conn, msgs, HubConfig(site="demo"))
    assert outcomes.count("stored") == len(msgs)
    end = conn.execute("SELECT max(last_seen) FROM visits").fetchone()[0] + 60
    conn.close()
    return db, end


def make_partner(tmp_path: Path, truth: dict) -> tuple[Served, Path]:
    pdb = tmp_path / "partner.db"
    pconn = partner_server.connect(pdb)
    partner_server.seed_from_groundtruth(pconn, truth, seed=3, others=200)
    pconn.close()
    return Served(partner_server.create_app(pdb, PARTNER_KEY)), pdb


def client_for(url: str, **kw) -> PartnerClient:
    cfg = dict(url=url, api_key=PARTNER_KEY, connect_timeout_s=1.0, read_timeout_s=3.0, retries=1, backoff_s=0.05)
    cfg.update(kw)
    return PartnerClient(PartnerConfig(**cfg))


def expected_targets(conn, sc: scenarios.Scenario, end: float) -> tuple[set[str], set[str]]:
    """(eligible, control) hashes computed straight from the visits, independently of the runner."""
    short = f"class = 'visitor' AND dwell_s < {sc.max_dwell_s}"
    cond = "class = 'passerby'" if sc.target == "passersby" else short
    hashes = {
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT partner_hash FROM visits WHERE partner_hash IS NOT NULL AND excluded = 0 AND {cond}"
            " AND last_seen <= ?",
            (end,),
        )
    }
    control = {h for h in hashes if sc.in_control(h)}
    return hashes - control, control


def test_o2o_end_to_end(day, tmp_path):
    out, truth, msgs = day
    db, end = make_hub(tmp_path, msgs)
    partner, pdb = make_partner(tmp_path, truth)
    clock = [end]  # the share links live on the simulated day's clock
    hub = Served(create_app(db, clock=lambda: clock[0]))
    try:
        conn = store.connect(db)
        # Partner hashes really are MD5 of the partner's normal form of the ground truth's global MACs.
        truth_hashes = {partner_server.mac_md5(m) for m in partner_server.global_macs(truth)}
        visit_hashes = {r[0] for r in conn.execute("SELECT partner_hash FROM visits WHERE partner_hash IS NOT NULL")}
        assert visit_hashes and visit_hashes <= truth_hashes
        assert (
            conn.execute("SELECT count(*) FROM visits WHERE randomized = 1 AND partner_hash IS NOT NULL").fetchone()[0]
            == 0
        )

        short = scenarios.Scenario(
            name="short-visits", target="short_visits", control_share=0.2, quiet_hours=(23.5, 8), price_match=1.0,
            price_sms=2.5, store_name="Snow Queen", coupon=coupons.Generator(kind="percent", value=15, min_purchase=50),
            control_salt="e2e-short",
        )  # fmt: skip
        # A fixed control salt: the day has few short visitors with a partner-known MAC, and a
        # random salt put all but one of them in the control group in about one run in six.
        passers = scenarios.Scenario(
            name="passersby", target="passersby", control_share=0.2, quiet_hours=None, price_match=1.0, price_sms=2.5,
            coupon=coupons.Generator(kind="fixed", value=300, type="barcode"), control_salt="e2e-passersby",
        )  # fmt: skip
        scenarios.add(conn, short, now=end - 3600)
        scenarios.add(conn, passers, now=end - 3600)
        export = runner.ExportSettings(directory=tmp_path / "exports", max_file_bytes=100)  # two rows a part
        client = client_for(partner.url)
        results = {r.scenario: r for r in runner.run_due(conn, client, now=end, export=export)}
        assert set(results) == {"short-visits", "passersby"}
        assert all(r.status == "ok" for r in results.values()), results

        pconn = partner_server.connect(pdb)
        subs = {r["mac_md5"]: r for r in pconn.execute("SELECT * FROM subscribers")}
        outbox = [dict(r) for r in pconn.execute("SELECT * FROM outbox")]
        subj = privacy.attach(conn)  # targets done with the partner keep their MAC MD5 keyed only
        total_sent = total_known = 0
        for sc in (short, passers):
            r = results[sc.name].counts
            eligible, control = expected_targets(conn, sc, end)
            known = {h for h in eligible if h in subs}
            messageable = {h for h in known if subs[h]["messageable"]}
            assert r["eligible"] == len(eligible) and r["control"] == len(control)
            assert r["sent_to_partner"] == len(eligible)
            assert r["matched"] == len(known) and r["messaged"] == len(messageable) == r["coupons"]
            # Seed 004: known but not messageable -> the ad segment (when a phone MD5 was shared);
            # unknown -> no contact needed.
            segment = {h for h in known - messageable if subs[h]["share_phone"]}
            assert r["segment_rows"] == len(segment) and r["unknown"] == len(eligible) - len(known)
            assert r["segment_no_phone"] == len(known - messageable) - len(segment)
            total_sent += len(eligible)
            total_known += len(known)
            # Each messaged device's SMS in the partner's outbox holds exactly its coupon code.
            rows = conn.execute(
                "SELECT partner_hash, coupon_code, message_id FROM o2o_targets WHERE scenario_id = ?"
                " AND status = 'messaged'",
                (sc.id,),
            ).fetchall()
            assert {row[0] for row in rows} == {subj.key(h) for h in messageable}
            for h, code, mid in rows:
                sms = [m for m in outbox if m["id"] == mid]
                assert len(sms) == 1 and subj.key(sms[0]["mac_md5"]) == h and code in sms[0]["text"]
            # Segment rows: the known, unmessageable ones with the phone MD5 the partner shared.
            seg = {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT mac_md5, msisdn_md5 FROM o2o_segment_rows WHERE scenario_id = ?", (sc.id,)
                )
            }
            assert seg == {subj.key(h): subs[h]["phone_md5"] for h in segment}
        assert len(outbox) == sum(results[n].counts["messaged"] for n in results)
        assert 0.6 <= total_known / total_sent <= 1.0  # seeded at 84 %

        # The segment share link serves the seed's format (split: 100-byte files), no auth needed.
        link, snap = results["passersby"].links[0], results["passersby"].snapshot
        assert snap["rows"] >= 1 and snap["parts"] == -(-snap["rows"] // 2)  # a few on a simulated day
        got = []
        for part in range(1, snap["parts"] + 1):
            resp = requests.get(f"{hub.url}/api/o2o/segments/{link['token']}", params={"part": part}, timeout=5)
            assert resp.status_code == 200 and len(resp.content) <= 100
            lines = resp.text.strip().splitlines()
            assert lines[0] == "msisdn" and all(len(x) == 32 for x in lines[1:])
            got += lines[1:]
        assert len(got) == len(set(got)) == results["passersby"].counts["exported_rows"] == snap["rows"]
        assert requests.get(f"{hub.url}/api/o2o/segments/nope", timeout=5).status_code == 404
        clock[0] = end + 3 * 86400 + 1
        assert requests.get(f"{hub.url}/api/o2o/segments/{link['token']}", timeout=5).status_code == 410
        clock[0] = end + 3600

        # A second run 30 minutes later finds nobody new (frequency cap) and sends nothing again.
        again = runner.run_due(conn, client, now=end + 1800, export=export)
        assert len(again) == 2 and all(r.counts["eligible"] == 0 and r.counts["messaged"] == 0 for r in again)
        assert pconn.execute("SELECT count(*) FROM outbox").fetchone()[0] == len(outbox)

        # POS: redeem some codes over HTTP with the store's key.
        key = pos.create_key(conn, "store-1")
        hdr = {"X-POS-Key": key}
        codes = [
            r[0]
            for r in conn.execute(
                "SELECT coupon_code FROM o2o_targets WHERE scenario_id = ? AND status = 'messaged' ORDER BY id",
                (short.id,),
            )
        ]
        assert len(codes) >= 2, "the simulated day should give a few messaged short visitors"
        redeem = codes[:-1]  # the last one stays unredeemed
        amounts = [1000.0 + 250 * i for i in range(len(redeem))]
        for code, amount in zip(redeem, amounts, strict=True):
            v = requests.post(f"{hub.url}/api/o2o/pos/validate", json={"code": code, "amount": amount}, headers=hdr)
            assert v.status_code == 200 and v.json()["discount"] == round(amount * 0.15, 2)
            r = requests.post(
                f"{hub.url}/api/o2o/pos/redeem", json={"code": code, "amount": amount, "receipt_id": "R1"}, headers=hdr
            )
            assert r.status_code == 200, r.text
        # Clear errors.
        bad = requests.post(f"{hub.url}/api/o2o/pos/redeem", json={"code": redeem[0], "amount": 100}, headers=hdr)
        assert bad.status_code == 409 and bad.json()["error"] == "already_redeemed"
        assert (
            requests.post(
                f"{hub.url}/api/o2o/pos/redeem", json={"code": "ZZZZZZZZZZ", "amount": 100}, headers=hdr
            ).json()["error"]
            == "unknown"
        )
        low = requests.post(f"{hub.url}/api/o2o/pos/redeem", json={"code": codes[-1], "amount": 10}, headers=hdr)
        assert low.status_code == 422 and low.json()["error"] == "below_minimum"
        assert (
            requests.post(
                f"{hub.url}/api/o2o/pos/redeem", json={"code": codes[-1], "amount": 100}, headers={"X-POS-Key": "pos_x"}
            ).status_code
            == 401
        )
        errs = requests.get(f"{hub.url}/api/o2o/pos/errors", headers=hdr).json()
        assert errs == {"already_redeemed": 1, "unknown": 1, "below_minimum": 1, "bad_key": 1}
        # Cancel one redemption and redeem it again with another amount: counted once, with the new amount.
        c = requests.post(
            f"{hub.url}/api/o2o/pos/cancel", json={"code": redeem[0], "reason": "till error"}, headers=hdr
        )
        assert c.status_code == 200
        r = requests.post(f"{hub.url}/api/o2o/pos/redeem", json={"code": redeem[0], "amount": 800.0}, headers=hdr)
        assert r.status_code == 200
        amounts[0] = 800.0

        # Report: counts, money and ROMI = (revenue - costs) / costs.
        api_key = auth.create_api_key(conn, "o2o-test")
        day_str = time.strftime("%Y-%m-%d", time.gmtime(end))
        rep = requests.get(
            f"{hub.url}/api/o2o/report", params={"start": day_str, "end": day_str}, headers={"X-API-Key": api_key}
        )
        assert rep.status_code == 200
        row = next(x for x in rep.json()["scenarios"] if x["scenario"] == "short-visits")
        r0 = results["short-visits"].counts
        revenue = sum(amounts)
        discount = sum(round(a * 0.15, 2) for a in amounts)
        partner_cost = r0["matched"] * 1.0 + r0["messaged"] * 2.5
        costs = discount + partner_cost
        assert row["eligible"] == r0["eligible"] and row["matched"] == r0["matched"]
        assert row["messaged"] == r0["messaged"] and row["coupons_issued"] == r0["coupons"]
        assert row["coupons_redeemed"] == len(redeem)
        assert row["revenue"] == pytest.approx(revenue) and row["discount_cost"] == pytest.approx(discount)
        assert row["partner_cost"] == pytest.approx(partner_cost)
        assert row["romi"] == pytest.approx((revenue - costs) / costs, abs=1e-3)
        assert row["match_rate"] == pytest.approx(r0["matched"] / r0["eligible"], abs=1e-4)
        assert requests.get(f"{hub.url}/api/o2o/report", timeout=5).status_code == 401
        csv_text = requests.get(
            f"{hub.url}/api/o2o/report", params={"start": day_str, "end": day_str, "format": "csv"},
            headers={"X-API-Key": api_key},
        ).text  # fmt: skip
        assert csv_text.splitlines()[0].startswith("scenario,") and "short-visits" in csv_text
        page = requests.get(f"{hub.url}/o2o", params={"start": day_str, "end": day_str}, headers={"X-API-Key": api_key})
        assert page.status_code == 200 and "short-visits" in page.text

        # Register and invoice reconcile with the partner's own usage figures.
        t0 = end - 86400
        inv = reports.partner_invoice(conn, t0, end + 86400)
        assert inv["matched"] == total_known and inv["hashes_sent"] == total_sent
        assert inv["sms"] == len(outbox)
        assert inv["total"] == pytest.approx(total_known * 1.0 + len(outbox) * 2.5)
        from footfall.hub.o2o import register

        theirs = client.usage(0, time.time() + 60)
        assert register.reconcile(inv, theirs)["ok"], register.reconcile(inv, theirs)
        kinds = {(t["recipient"], t["kind"], t["status"]) for t in register.summary(conn, t0, end + 86400)}
        assert ("partner", "match", "ok") in kinds and ("ad_platform", "segment", "ok") in kinds
        conn.close()
        pconn.close()
    finally:
        hub.stop()
        partner.stop()


def test_partner_down_then_slow_then_back(day, tmp_path):
    out, truth, msgs = day
    db, end = make_hub(tmp_path, msgs)
    conn = store.connect(db)
    sc = scenarios.Scenario(name="short", target="short_visits", control_share=0.0, quiet_hours=None, retry_s=300)
    scenarios.add(conn, sc, now=end - 60)
    export = runner.ExportSettings(directory=tmp_path / "exports")

    # 1. Down: connection refused. Nothing is marked sent, the run is due again after retry_s.
    dead = client_for(f"http://127.0.0.1:{free_port()}")
    [res] = runner.run_due(conn, dead, now=end, export=export)
    assert res.status == "failed" and res.error.startswith("unavailable")
    assert res.counts["eligible"] > 0 and res.counts["sent_to_partner"] == 0 and res.counts["messaged"] == 0
    statuses = dict(conn.execute("SELECT status, count(*) FROM o2o_targets GROUP BY 1").fetchall())
    assert statuses == {"pending": res.counts["eligible"]}
    assert (
        conn.execute(
            "SELECT count(*) FROM o2o_targets WHERE sent_at IS NOT NULL OR coupon_code IS NOT NULL"
        ).fetchone()[0]
        == 0
    )
    assert conn.execute("SELECT min(attempts) FROM o2o_targets").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM o2o_coupons").fetchone()[0] == 0
    assert {t["status"] for t in conn.execute("SELECT status FROM o2o_transfers")} == {"failed"}
    assert runner.run_due(conn, dead, now=end + 60, export=export) == []  # not due before retry_s
    pending = res.counts["eligible"]

    partner, pdb = make_partner(tmp_path, truth)
    try:
        # 2. Slow on SMS: matching succeeds, the SMS request times out after the partner queued them.
        partner.server.config.app.state.delays = {"/v1/sms": 1.5}
        slow = client_for(partner.url, read_timeout_s=0.4, retries=0)
        [res2] = runner.run_due(conn, slow, now=end + 300, export=export)
        assert res2.status == "failed" and res2.error.startswith("timeout")
        assert res2.counts["eligible"] == 0 and res2.counts["sent_to_partner"] == pending
        assert res2.counts["messaged"] == 0 and res2.counts["coupons"] > 0
        assert conn.execute("SELECT count(*) FROM o2o_targets WHERE status = 'messaged'").fetchone()[0] == 0
        matched = conn.execute("SELECT count(*) FROM o2o_targets WHERE status = 'matched'").fetchone()[0]
        assert matched == res2.counts["coupons"]
        time.sleep(1.5)  # the server finishes the request the client gave up on
        pconn = partner_server.connect(pdb)
        assert pconn.execute("SELECT count(*) FROM outbox").fetchone()[0] == matched

        # 3. Back to normal: the retry sends the same refs; the partner answers 'duplicate', no second SMS.
        partner.server.config.app.state.delays = {}
        [res3] = runner.run_due(conn, client_for(partner.url), now=end + 600, export=export)
        assert res3.status == "ok" and res3.counts["messaged"] == matched and res3.counts["coupons"] == 0
        assert pconn.execute("SELECT count(*) FROM outbox").fetchone()[0] == matched
        assert conn.execute("SELECT count(*) FROM o2o_targets WHERE status = 'messaged'").fetchone()[0] == matched
        assert conn.execute("SELECT count(*) FROM o2o_targets WHERE status = 'pending'").fetchone()[0] == 0
        # Every message_id recorded is in the partner's outbox.
        mids = {r[0] for r in conn.execute("SELECT message_id FROM o2o_targets WHERE message_id IS NOT NULL")}
        assert mids == {r[0] for r in pconn.execute("SELECT id FROM outbox")}
        # The register shows the timed-out SMS request as 'unknown', never 'ok'.
        sms = conn.execute("SELECT status, sum(count) FROM o2o_transfers WHERE kind = 'sms' GROUP BY 1").fetchall()
        assert dict(sms) == {"unknown": matched, "ok": matched}
        pconn.close()
    finally:
        partner.stop()
    conn.close()


def test_partner_slow_match_is_retried(day, tmp_path):
    out, truth, msgs = day
    db, end = make_hub(tmp_path, msgs)
    conn = store.connect(db)
    sc = scenarios.Scenario(name="pass", target="passersby", control_share=0.0, quiet_hours=None)
    scenarios.add(conn, sc, now=end - 60)
    partner, _ = make_partner(tmp_path, truth)
    try:
        partner.server.config.app.state.delay_s = 1.0
        export = runner.ExportSettings(directory=tmp_path / "exports")
        [res] = runner.run_due(conn, client_for(partner.url, read_timeout_s=0.3), now=end, export=export)
        assert res.status == "failed" and res.error.startswith("timeout")
        assert conn.execute("SELECT count(*) FROM o2o_targets WHERE status != 'pending'").fetchone()[0] == 0
        assert conn.execute("SELECT min(attempts) FROM o2o_targets").fetchone()[0] == 1
        assert {r[0] for r in conn.execute("SELECT status FROM o2o_transfers")} == {"unknown"}
        partner.server.config.app.state.delay_s = 0.0
        [res] = runner.run_due(conn, client_for(partner.url), now=end + sc.retry_s, export=export)
        assert res.status == "ok" and res.counts["sent_to_partner"] > 0
        assert conn.execute("SELECT count(*) FROM o2o_targets WHERE status = 'pending'").fetchone()[0] == 0
    finally:
        partner.stop()
    conn.close()


def test_fifty_concurrent_redemptions_succeed_once(tmp_path):
    db = tmp_path / "hub.db"
    conn = store.connect(db)
    code = coupons.issue(
        conn, coupons.Generator(value=20), scenario_id=None, device_key="d", partner_hash=hashlib.md5(b"x").hexdigest()
    )
    conn.commit()
    key = pos.create_key(conn, "store-1")
    conn.close()
    hub = Served(create_app(db))
    try:
        barrier = threading.Barrier(50)
        results: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def till(i: int) -> None:
            s = requests.Session()
            barrier.wait()
            r = s.post(
                f"{hub.url}/api/o2o/pos/redeem", json={"code": code, "amount": 500, "receipt_id": f"R{i}"},
                headers={"X-POS-Key": key}, timeout=60,
            )  # fmt: skip
            with lock:
                results.append((r.status_code, r.json()))

        threads = [threading.Thread(target=till, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert len(results) == 50
        ok = [b for s, b in results if s == 200]
        assert len(ok) == 1 and ok[0]["discount"] == 100.0
        assert sorted({(s, b.get("error")) for s, b in results if s != 200}) == [(409, "already_redeemed")]
        conn = store.connect(db)
        assert conn.execute("SELECT count(*) FROM o2o_redemptions").fetchone()[0] == 1
        conn.close()
    finally:
        hub.stop()
