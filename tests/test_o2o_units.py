"""O2O building blocks on real SQLite files: coupons, consent, control groups, segment export, CLI."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from footfall.hub import store
from footfall.hub.o2o import consent, coupons, privacy, register, scenarios
from footfall.hub.o2o.coupons import CouponError, Generator


@pytest.fixture
def conn(tmp_path):
    c = store.connect(tmp_path / "hub.db")
    yield c
    c.close()


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def test_codes_have_check_character_and_catch_typos():
    gen = Generator()
    codes = {gen.new_code() for _ in range(2000)}
    assert len(codes) == 2000 and all(len(c) == 10 and gen.well_formed(c) for c in codes)
    chars = coupons.DEFAULT_ALPHABET
    for code in list(codes)[:200]:
        i = 3
        typo = code[:i] + chars[(chars.index(code[i]) + 1) % len(chars)] + code[i + 1 :]
        assert not gen.well_formed(typo)
        if code[4] != code[5] and {code[4], code[5]} != {chars[0], chars[-1]}:  # Luhn's one blind pair
            assert not gen.well_formed(code[:4] + code[5] + code[4] + code[6:])


def test_generator_options_and_barcode():
    assert all(c.isdigit() for c in Generator(charset="digits", length=8).new_code())
    assert Generator(charset="lower", length=12).new_code().islower()
    ean = Generator(type="barcode").new_code()
    assert len(ean) == 13 and ean.startswith("2") and coupons.ean13_check(ean[:12]) == ean[12]
    assert coupons.ean13_check("400638133393") == "1"  # a published EAN-13
    for bad in (dict(kind="gift"), dict(value=150), dict(length=3), dict(charset="abc"), dict(ttl_days=None)):
        with pytest.raises(ValueError):
            Generator(**bad)
    g = Generator(ttl_days=30, end_date="2026-01-10")
    assert g.valid_until(time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, 0))) == pytest.approx(1768089600.0)


def test_redeem_rules_and_cancel(conn):
    now = 1_800_000_000.0
    gen = Generator(kind="fixed", value=300, min_purchase=1000, ttl_days=7, stores=["s1", "s2"])
    code = coupons.issue(conn, gen, scenario_id=None, device_key="d", partner_hash=md5("x"), now=now)
    conn.commit()
    with pytest.raises(CouponError) as e:
        coupons.redeem(conn, code, "s9", 2000, now=now + 10)
    assert e.value.code == "wrong_store" and e.value.http_status == 403
    with pytest.raises(CouponError) as e:
        coupons.redeem(conn, code, "s1", 999, now=now + 10)
    assert e.value.code == "below_minimum"
    with pytest.raises(CouponError) as e:
        coupons.redeem(conn, code, "s1", 2000, now=now + 8 * 86400)
    assert e.value.code == "expired" and e.value.http_status == 410
    with pytest.raises(CouponError) as e:
        coupons.redeem(conn, "NOPE", "s1", 2000, now=now)
    assert e.value.code == "unknown"
    out = coupons.redeem(conn, code.lower(), "s1", 2000, receipt_id="R1", now=now + 10)
    assert out["discount"] == 300 and out["to_pay"] == 1700
    with pytest.raises(CouponError) as e:
        coupons.redeem(conn, code, "s1", 2000, now=now + 11)
    assert e.value.code == "already_redeemed"
    with pytest.raises(CouponError) as e:
        coupons.cancel(conn, code, "s2", now=now + 12)
    assert e.value.code == "wrong_store"
    coupons.cancel(conn, code, "s1", receipt_id="R1", now=now + 12)
    assert coupons.redeem(conn, code, "s2", 1500, now=now + 13)["discount"] == 300
    assert tuple(conn.execute("SELECT count(*), count(cancelled_at) FROM o2o_redemptions").fetchone()) == (2, 1)
    assert not conn.in_transaction


def test_bindings_limit(conn):
    gen = Generator(bindings_limit=2, campaign="c")
    for _ in range(2):
        coupons.issue(conn, gen, scenario_id=1, device_key="d", partner_hash=None)
    with pytest.raises(CouponError):
        coupons.issue(conn, gen, scenario_id=1, device_key="d", partner_hash=None)


def test_consent_checks_in_order(conn):
    h, phone = md5("AA:BB:CC:00:11:22"), md5("+79990001122")
    noon = 1_800_000_000.0 - (1_800_000_000.0 % 86400) + 12 * 3600
    kw = dict(channel="sms", category="promo", now=noon, quiet=(21.0, 9.0), tz="UTC")
    assert consent.check(conn, [h, phone], partner_consent=True, **kw).ok
    assert consent.check(conn, [h], partner_consent=False, **kw).reason == "no_consent"
    night = dict(kw, now=noon + 11 * 3600)  # 23:00 wraps into 21-9
    d = consent.check(conn, [h], partner_consent=True, **night)
    assert not d.ok and d.defer and d.reason == "quiet_hours"
    assert consent.check(conn, [h], partner_consent=False, system=True, **night).ok  # code confirmation
    consent.set_consent(conn, phone, "sms", "unsubscribed", "promo")
    assert consent.check(conn, [h, phone], partner_consent=True, **kw).reason == "unsubscribed"
    assert consent.check(conn, [h, phone], partner_consent=True, **dict(kw, category="news")).ok
    consent.set_consent(conn, h, "sms", "withdrawn")
    assert consent.check(conn, [h], partner_consent=True, **kw).reason == "no_consent"
    consent.add_stop(conn, h.upper(), "complaint")
    assert consent.check(conn, [h], partner_consent=True, system=True, **kw).reason == "stop_list"


def test_control_group_is_stable_and_sized():
    sc = scenarios.Scenario(name="x", control_share=0.2, control_salt="salt")
    hashes = [md5(str(i)) for i in range(5000)]
    first = [sc.in_control(h) for h in hashes]
    assert first == [scenarios.Scenario(name="y", control_share=0.2, control_salt="salt").in_control(h) for h in hashes]
    assert 0.18 < sum(first) / len(first) < 0.22
    with pytest.raises(ValueError):
        scenarios.Scenario(name="bad", message="{nope}")
    with pytest.raises(ValueError):
        scenarios.Scenario(name="bad", target="everyone")


def test_scenario_roundtrip(conn):
    sc = scenarios.Scenario(name="s", target="passersby", coupon=Generator(kind="fixed", value=5), quiet_hours=None)
    scenarios.add(conn, sc)
    back = scenarios.get(conn, "s")
    assert back.coupon == sc.coupon and back.quiet_hours is None and back.control_salt == sc.control_salt
    with pytest.raises(ValueError):
        scenarios.add(conn, scenarios.Scenario(name="s"))


# The ad-platform segment's files, links and register: tests/test_o2o_adsegment.py.


def test_reconcile():
    ours = {"hashes_sent": 10, "matched": 8, "sms": 5}
    assert register.reconcile(ours, {"hashes": 10, "known": 8, "sms": 5})["ok"]
    r = register.reconcile(ours, {"hashes": 12, "known": 9, "sms": 5})
    assert not r["ok"] and r["difference"] == {"hashes": 2, "known": 1, "sms": 0}


def test_cli(tmp_path, capsys):
    import argparse

    from footfall.cli import build_parser
    from footfall.hub.o2o.cli import register_o2o

    parser = argparse.ArgumentParser()
    register_o2o(parser.add_subparsers())
    db = str(tmp_path / "hub.db")
    args = parser.parse_args(["o2o", "scenario", "add", "quick", "--db", db, "--target", "passersby",
                              "--discount-fixed", "200", "--quiet-hours", "none"])  # fmt: skip
    assert args.func(args) == 0
    args = parser.parse_args(["o2o", "scenario", "list", "--db", db])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert '"name": "quick"' in out
    args = parser.parse_args(["o2o", "pos-key", "create", "store-1", "--db", db])
    args.func(args)
    assert capsys.readouterr().out.startswith("pos_")
    args = parser.parse_args(["o2o", "report", "--db", db, "--start", "2026-11-01", "--end", "2026-11-02"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)[0]["scenario"] == "quick"
    bad = parser.parse_args(["o2o", "scenario", "add", "bad", "--db", db, "--control-share", "2"])
    assert bad.func(bad) == 2
    assert build_parser  # the top-level CLI imports fine with the o2o part present


def test_retention_clears_o2o_hashes_but_keeps_the_counts(conn):
    from footfall.hub import retention
    from footfall.hub.config import HubConfig, RetentionConfig

    now = time.time()
    old, recent = now - 500 * 86400, now - 10 * 86400
    conn.execute(
        "INSERT INTO o2o_scenarios (id, name, config, created, updated) VALUES (1, 'sc', '{}', ?, ?)", (old, old)
    )
    for tid, at, status in ((1, old, "messaged"), (2, old, "segment"), (3, recent, "messaged")):
        conn.execute(
            "INSERT INTO o2o_targets (id, scenario_id, run_id, partner_hash, device_key, visit_at, assigned_at,"
            " status, phone_md5, updated) VALUES (?, 1, 1, ?, ?, ?, ?, ?, ?, ?)",
            (tid, md5(f"mac{tid}"), f"dev{tid}", at, at, status, md5(f"phone{tid}"), at),
        )
        conn.execute(
            "INSERT INTO o2o_segment_rows (scenario_id, target_id, mac_md5, msisdn_md5, added) VALUES (1, ?, ?, ?, ?)",
            (tid, md5(f"mac{tid}"), md5(f"phone{tid}"), at),
        )
    for code, issued, until in (
        ("OLDGONE", old, old + 30 * 86400),
        ("OLDVALID", old, now + 86400),
        ("NEW", recent, now),
    ):
        conn.execute(
            "INSERT INTO o2o_coupons (code, scenario_id, target_id, device_key, partner_hash, kind, value,"
            " valid_from, valid_until, issued_at) VALUES (?, 1, 1, 'dev1', ?, 'percent', 10, ?, ?, ?)",
            (code, md5("mac1"), issued, until, issued),
        )
    consent.set_consent(conn, md5("mac1"), "sms", "withdrawn")
    conn.commit()

    config = HubConfig(site="st", retention=RetentionConfig(o2o_days=90))
    result = retention.apply(conn, config, now=now)
    # Two by o2o_days, the third (10 days old) by the scenario's 7-day segment membership.
    assert (result.o2o_targets_cleared, result.o2o_segment_rows_deleted) == (2, 3)
    targets = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM o2o_targets")}
    assert [targets[i]["status"] for i in (1, 2, 3)] == ["messaged", "segment", "messaged"]  # counts kept
    for i in (1, 2):
        assert (targets[i]["partner_hash"], targets[i]["device_key"], targets[i]["phone_md5"]) == ("", "", None)
    # A target done with the partner keeps its MAC MD5 keyed only; the partner's phone MD5 stays.
    subj = privacy.attach(conn)
    assert targets[3]["partner_hash"] == subj.key(md5("mac3")) and targets[3]["phone_md5"] == md5("phone3")
    assert [r[0] for r in conn.execute("SELECT target_id FROM o2o_segment_rows")] == []
    kept = {r["code"]: r["partner_hash"] for r in conn.execute("SELECT code, partner_hash FROM o2o_coupons")}
    assert kept == {"OLDGONE": None, "OLDVALID": subj.key(md5("mac1")), "NEW": subj.key(md5("mac1"))}
    # Consent outlives o2o_days (it is aged out after three years, keyed meanwhile).
    assert [r[0] for r in conn.execute("SELECT subject FROM o2o_consent")] == [subj.key(md5("mac1"))]
    assert retention.apply(conn, config, now=now).o2o_targets_cleared == 0
