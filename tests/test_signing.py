"""HMAC request signing shared by hub and centre: round trip, tampering, clock window, replay."""

from __future__ import annotations

import pytest

from footfall.cloud_sync import signing
from footfall.cloud_sync.signing import NonceCache, SignatureError, sign_headers, verify

SECRET = b"s3cret-of-store-042"
NOW = 1_793_600_000.0
PATH = "/api/v1/sync/batches"
BODY = b"\x1f\x8b compressed bytes as sent"


def _signed(**kw):
    return sign_headers(SECRET, "store-042", "POST", PATH, BODY, now=NOW, **kw)


def test_round_trip_and_header_shape() -> None:
    h = _signed()
    assert h[signing.HUB_HEADER] == "store-042"
    assert h[signing.TIMESTAMP_HEADER] == str(int(NOW))
    assert len(h[signing.NONCE_HEADER]) == 32 and len(h[signing.SIGNATURE_HEADER]) == 64
    verify(SECRET, h, "POST", PATH, BODY, now=NOW)
    # Header names are case-insensitive on the wire; a plain lower-case dict must verify too.
    verify(SECRET, {k.lower(): v for k, v in h.items()}, "post", PATH, BODY, now=NOW + 299)
    assert signing.hub_of({k.lower(): v for k, v in h.items()}) == "store-042"


def test_deterministic_given_nonce_and_time() -> None:
    a = _signed(nonce="0" * 32)
    b = _signed(nonce="0" * 32)
    assert a == b
    assert _signed()[signing.NONCE_HEADER] != _signed()[signing.NONCE_HEADER]


@pytest.mark.parametrize(
    "method, path, body, secret",
    [
        ("POST", PATH, BODY + b"x", SECRET),  # body changed
        ("POST", PATH + "?x=1", BODY, SECRET),  # path/query changed
        ("PUT", PATH, BODY, SECRET),  # method changed
        ("POST", PATH, BODY, b"another hub's secret"),  # wrong key
        ("POST", PATH, b"", SECRET),  # body dropped
    ],
)
def test_tampered_request_rejected(method: str, path: str, body: bytes, secret: bytes) -> None:
    with pytest.raises(SignatureError) as exc:
        verify(secret, _signed(), method, path, body, now=NOW)
    assert exc.value.reason == "bad_signature"


def test_tampered_headers_rejected() -> None:
    h = _signed()
    for name, value in (
        (signing.TIMESTAMP_HEADER, str(int(NOW) + 1)),
        (signing.NONCE_HEADER, "f" * 32),
        (signing.SIGNATURE_HEADER, "0" * 64),
    ):
        bad = dict(h) | {name: value}
        with pytest.raises(SignatureError) as exc:
            verify(SECRET, bad, "POST", PATH, BODY, now=NOW)
        assert exc.value.reason == "bad_signature"


def test_timestamp_window() -> None:
    h = _signed()
    verify(SECRET, h, "POST", PATH, BODY, now=NOW + 300)
    verify(SECRET, h, "POST", PATH, BODY, now=NOW - 300)
    for skew in (301, -301, 86400):
        with pytest.raises(SignatureError) as exc:
            verify(SECRET, h, "POST", PATH, BODY, now=NOW + skew)
        assert exc.value.reason == "stale_timestamp"
    with pytest.raises(SignatureError):
        verify(SECRET, h, "POST", PATH, BODY, now=NOW + 61, window_s=60)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({signing.TIMESTAMP_HEADER: "12.5"}, "bad_timestamp"),
        ({signing.TIMESTAMP_HEADER: ""}, "missing_header"),
        ({signing.NONCE_HEADER: "short"}, "bad_nonce"),
        ({signing.SIGNATURE_HEADER: "zz"}, "bad_signature"),
    ],
)
def test_malformed_headers(change: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError) as exc:
        verify(SECRET, _signed() | change, "POST", PATH, BODY, now=NOW)
    assert exc.value.reason == reason


def test_missing_header_named() -> None:
    h = _signed()
    del h[signing.SIGNATURE_HEADER]
    with pytest.raises(SignatureError) as exc:
        verify(SECRET, h, "POST", PATH, BODY, now=NOW)
    assert exc.value.reason == "missing_header" and signing.SIGNATURE_HEADER in str(exc.value)


def test_nonce_cache_rejects_replay_and_forgets_after_window() -> None:
    cache = NonceCache(window_s=300)
    h = _signed()
    verify(SECRET, h, "POST", PATH, BODY, now=NOW)
    cache.check_and_add("store-042", h[signing.NONCE_HEADER], now=NOW)
    with pytest.raises(SignatureError) as exc:
        cache.check_and_add("store-042", h[signing.NONCE_HEADER], now=NOW + 10)
    assert exc.value.reason == "replay"
    # Another hub may (by chance) use the same nonce.
    cache.check_and_add("store-043", h[signing.NONCE_HEADER], now=NOW + 10)
    # Long after the window the signature check itself rejects the old timestamp, so the
    # cache may forget: it stays small.
    cache.check_and_add("store-042", "a" * 32, now=NOW + 10_000)
    assert len(cache) == 1


def test_nonce_cache_fails_closed_when_full() -> None:
    cache = NonceCache(window_s=300, max_entries=2)
    cache.check_and_add("h", "1" * 32, now=NOW)
    cache.check_and_add("h", "2" * 32, now=NOW)
    with pytest.raises(SignatureError):
        cache.check_and_add("h", "3" * 32, now=NOW)


def test_load_secret(tmp_path, monkeypatch) -> None:
    f = tmp_path / "secret"
    f.write_text("abc\n")
    assert signing.load_secret(file=f) == b"abc"
    monkeypatch.setenv("MY_SECRET", "xyz")
    assert signing.load_secret(env="MY_SECRET") == b"xyz"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError):
        signing.load_secret(file=tmp_path / "empty")
    with pytest.raises(ValueError):
        signing.load_secret()
    with pytest.raises(ValueError):
        sign_headers(b"", "h", "GET", "/", b"")
