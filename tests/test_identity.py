import hashlib
import os

import pytest

from footfall.edge_agent.identity import (
    Identifier,
    format_mac,
    is_randomized,
    load_key,
    parse_mac,
    partner_hash,
)

KEY = bytes(range(32))
GLOBAL = bytes.fromhex("f0189800aa01")  # Apple OUI, globally administered
RANDOM = bytes.fromhex("7a1b2c3d4e5f")  # locally administered bit set


def test_randomized_flag_is_the_locally_administered_bit():
    assert not is_randomized(GLOBAL)
    assert is_randomized(RANDOM)


def test_device_id_is_keyed_and_stable():
    a = Identifier(KEY).identify(GLOBAL)
    b = Identifier(KEY).identify(GLOBAL)
    other_key = Identifier(bytes(32)).identify(GLOBAL)
    assert a == b
    assert a is not None and other_key is not None
    assert a[0] != other_key[0]
    assert len(a[0].hex()) == 32
    assert Identifier(KEY).device_id(GLOBAL) == a[0].hex()
    # Not an unkeyed hash of the MAC in any common spelling.
    for style in ("colon-lower", "colon-upper", "plain-lower"):
        text = format_mac(GLOBAL, style).encode()
        for algo in ("md5", "sha1", "sha256"):
            assert hashlib.new(algo, text).hexdigest()[:32] != a[0].hex()


def test_device_id_is_standard_hmac_sha256():
    import hmac

    for key in (KEY, bytes(range(100))):  # a key longer than the block is hashed first (RFC 2104)
        for mac in (GLOBAL, RANDOM):
            assert Identifier(key).device_digest(mac) == hmac.digest(key, mac, "sha256")[:16]


def test_partner_hash_only_when_enabled_and_only_for_global_macs():
    assert Identifier(KEY).identify(GLOBAL)[2] is None
    ident = Identifier(KEY, partner_format="colon-upper")
    assert ident.identify(GLOBAL)[2] == hashlib.md5(b"F0:18:98:00:AA:01").hexdigest()
    assert ident.identify(RANDOM)[2] is None


@pytest.mark.parametrize(
    "style,text",
    [
        ("colon-upper", "F0:18:98:00:AA:01"),
        ("colon-lower", "f0:18:98:00:aa:01"),
        ("dash-upper", "F0-18-98-00-AA-01"),
        ("plain-lower", "f0189800aa01"),
        ("plain-upper", "F0189800AA01"),
    ],
)
def test_partner_normal_forms(style, text):
    assert format_mac(GLOBAL, style) == text
    assert partner_hash(GLOBAL, style) == hashlib.md5(text.encode()).hexdigest()
    assert parse_mac(text) == GLOBAL


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="12 hex digits"):
        parse_mac("not a mac")
    with pytest.raises(ValueError, match="unknown MAC format"):
        format_mac(GLOBAL, "weird")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Identifier(b"short")


def test_optout_device_produces_nothing():
    ident = Identifier(KEY)
    device = ident.device_id(GLOBAL)
    ident.set_optout([device.upper()])
    assert ident.identify(GLOBAL) is None
    assert ident.identify(GLOBAL) is None
    assert ident.optout_hits == 2
    assert ident.identify(RANDOM) is not None


def test_cache_stays_bounded(monkeypatch):
    import footfall.edge_agent.identity as identity

    monkeypatch.setattr(identity, "CACHE_LIMIT", 100)
    ident = Identifier(KEY)
    for i in range(1000):
        ident.identify(i.to_bytes(6, "big"))
    assert len(ident._cache) <= 100


def test_key_file_created_private_and_validated(tmp_path):
    path = tmp_path / "hash.key"
    with pytest.raises(FileNotFoundError):
        load_key(path)
    key = load_key(path, create=True)
    assert len(key) == 32
    assert os.stat(path).st_mode & 0o077 == 0
    assert load_key(path) == key
    path.write_text("zz")
    with pytest.raises(ValueError, match="hex"):
        load_key(path)


def test_agent_applies_compact_optout_from_hub_config(monkeypatch):
    from footfall import schema
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    monkeypatch.setenv("FOOTFALL_HASH_KEY", KEY.hex())
    agent = Agent(AgentConfig(site="st", sensor="s1"), lambda kind, payload: None)
    opted = agent.identifier.device_id(GLOBAL)
    assert agent.apply_config({"optout_prefixes": schema.pack_optout_prefixes([opted])}) == ["optout"]
    assert agent.identifier.identify(GLOBAL) is None
    assert agent.identifier.identify(RANDOM) is not None
    # A malformed list is refused with a log line; the one in force stays.
    assert agent.apply_config({"optout_prefixes": "not base64!"}) == []
    assert agent.identifier.identify(GLOBAL) is None
    # A full-id list replaces it.
    assert agent.apply_config({"optout": []}) == ["optout"]
    assert agent.identifier.identify(GLOBAL) is not None


def test_ssid_hash_is_the_keyed_hmac_and_its_cache_is_bounded() -> None:
    """The cached, precomputed-state SSID hash is HMAC-SHA256(key, "ssid\\0" + ssid), as the
    hub and earlier agents computed it, and the cache never outgrows its limit."""
    import hashlib
    import hmac

    from footfall.edge_agent import identity

    key = bytes(range(32))
    ident = identity.Identifier(key)
    for ssid in (b"", b"home", b"x" * 32, b"home", "Кафе".encode()):
        assert ident.ssid_hash(ssid) == hmac.new(key, b"ssid\x00" + ssid, hashlib.sha256).hexdigest()[:12]
    for k in range(identity.SSID_CACHE_LIMIT * 2 + 5):
        ident.ssid_hash(b"net-%d" % k)
        assert len(ident._ssids) <= identity.SSID_CACHE_LIMIT


def test_saved_hub_config_holds_no_raw_mac(monkeypatch, tmp_path):
    """Only what the agent applies, checked value by value, reaches the sensor's disk: a MAC
    sent where an id belongs, in a field the agent does not know, or nested in the visit
    settings, is not written (privacy: no raw MAC on disk), and the file still restores the
    opt-out at the next start."""
    import re

    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    monkeypatch.setenv("FOOTFALL_HASH_KEY", KEY.hex())
    cfg = AgentConfig(site="st", sensor="s1")
    cfg.buffer_path = str(tmp_path / "buffer.db")
    agent = Agent(cfg, lambda kind, payload: None)
    opted = agent.identifier.device_id(GLOBAL)
    config = {
        "v": 1,
        "type": "config",
        "optout": [opted, "00:1b:63:a1:b2:c3"],
        "pending_optout": ["00:1b:63:d4:e5:f6"],
        "visits": {"min_inside_s": 90, "note": "AA-BB-CC-DD-EE-FF"},
        "presence_interval_s": 30,
    }
    assert "optout" in agent.apply_config(config)
    text = cfg.hub_config_file().read_text()
    assert not re.search(r"(?i)[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}(?![0-9a-f])", text.replace(opted, "")), text
    assert opted in text and '"min_inside_s":90' in text and "note" not in text and "pending" not in text
    # A string where the list belongs is not applied, so the file is not touched.
    before = cfg.hub_config_file().read_bytes()
    assert agent.apply_config({"v": 1, "type": "config", "optout": "00:1b:63:a1:b2:c3"}) == []
    assert cfg.hub_config_file().read_bytes() == before
    # The next start applies it before any frame.
    again = Agent(cfg, lambda kind, payload: None)
    assert again.identifier.identify(GLOBAL) is None
    assert again.config.visits.min_inside_s == 90 and again.config.presence_interval_s == 30
