"""The site's certificate revocation list: revoking a serial, writing the CRL, re-signing it in time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from footfall.tools.provision import ca
from footfall.tools.provision.files import PUBLIC_MODE, write_file
from footfall.tools.provision.sitedir import ProvisionError, _load_ca, _paths
from footfall.tools.provision.state import SiteState, load, save


def _write_crl(
    site_dir: Path, state: SiteState, ca_cert: x509.Certificate, ca_key: ca.PrivateKey, days: int = 365
) -> None:
    revoked = [(int(r["serial"], 16), dt.datetime.fromisoformat(r["revoked_at"])) for r in state.revoked]
    crl = ca.make_crl(ca_cert, ca_key, revoked, days=days)
    pem = ca.crl_pem(crl)
    write_file(site_dir / "ca" / "crl.pem", pem, PUBLIC_MODE)
    write_file(_paths(site_dir)["broker"] / "crl.pem", pem)
    state.crl = {
        "last_update": crl.last_update_utc.isoformat(),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
        "entries": len(revoked),
    }


def _revoke_serial(state: SiteState, record: dict, subject: str, reason: str) -> None:
    state.revoked.append(
        {
            "serial": record["serial"],
            "revoked_at": ca.now().replace(microsecond=0).isoformat(),
            "reason": reason,
            "subject": subject,
        }
    )


# A CRL that expires soon locks every sensor out of the broker when nobody re-signs it in
# time: a month leaves room for a missed renewal (crl --days 0 once wrote one already expired).
MIN_CRL_DAYS = 30


def crl_days_left(state: SiteState, now: dt.datetime | None = None) -> float | None:
    """Days until the CRL's next_update (negative once expired); None when none was recorded."""
    nxt = state.crl.get("next_update")
    if not nxt:
        return None
    return (dt.datetime.fromisoformat(nxt) - (now or ca.now())).total_seconds() / 86400


def refresh_crl(
    site_dir: Path,
    *,
    passphrase: bytes | None = None,
    days: int = 365,
    if_expiring_within: float | None = None,
) -> SiteState | None:
    """Re-sign the CRL before its next_update: an expired CRL makes Mosquitto refuse everyone.

    With ``if_expiring_within`` (days) it re-signs only when fewer days than that remain and
    returns None otherwise, without touching the CA key: what an unattended timer runs daily.
    """
    if days < MIN_CRL_DAYS:
        raise ProvisionError(
            f"a CRL valid for {days} days would lock every sensor out when it lapses; use --days {MIN_CRL_DAYS} or more"
        )
    if if_expiring_within is not None:
        if if_expiring_within < 0:
            raise ProvisionError(f"--if-expiring-within must be 0 days or more, not {if_expiring_within}")
        if if_expiring_within >= days:
            # Otherwise every run would find the fresh CRL "expiring" and re-sign it again.
            raise ProvisionError(
                f"--if-expiring-within {if_expiring_within:g} must be less than the new CRL's lifetime (--days {days})"
            )
    state = load(site_dir)
    if if_expiring_within is not None:
        left = crl_days_left(state)
        if left is not None and left >= if_expiring_within:
            return None
    ca_cert, ca_key = _load_ca(site_dir, passphrase)
    _write_crl(site_dir, state, ca_cert, ca_key, days)
    save(site_dir, state)
    return state
