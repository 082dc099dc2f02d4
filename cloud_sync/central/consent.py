"""152-FZ: personal-data consent, withdrawal, shopper opt-out and retention.

- A phone hash is personal data, and so is the partner's unkeyed MD5 of the MAC. They are
  stored (``identifiers`` types ``phone_md5``, ``mac_md5``) and exported only while
  ``consents.pd_consent`` is 1 for that profile.
- Withdrawing consent deletes the phone hashes and every queued export item of the profile,
  and keeps only the fact and date of withdrawal (``consents.withdrawn`` and a
  ``consent_withdrawn`` profile event); the hubs are told through pushback so they stop
  sending the hash too.
- An opt-out (the shopper-facing page: a MAC address, hashed at once with the chain key the
  sensors use) erases the profile, its per-store stats, identifiers, events, consent and queued
  exports, removes the device from stored segment member lists, and tells every hub, which
  hands it on to every sensor. Only the keyed hash and the date are kept, so that later
  batches and sensors can keep ignoring the device. The raw MAC is never stored or logged.
- Retention: events older than ``events_days`` and profiles not seen for ``profiles_days``
  are deleted, and so are the member lists of segment versions older than that (their sizes
  stay); nonces outside the replay window and applied-batch ids older than
  ``batches_days`` are pruned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from footfall.cloud_sync.central import profiles, pushback
from footfall.cloud_sync.central.db import Connection
from footfall.edge_agent.identity import Identifier, parse_mac

DAY = 86400.0


def record_consent(conn: Connection, device: str, *, ts: float | None = None, source: str = "central") -> None:
    ts = time.time() if ts is None else ts
    with conn.transaction():
        conn.execute(
            "INSERT INTO consents (device, pd_consent, given, withdrawn, source) VALUES (?, 1, ?, NULL, ?) "
            "ON CONFLICT (device) DO UPDATE SET pd_consent = 1, given = excluded.given, withdrawn = NULL, "
            "source = excluded.source",
            (device, ts, source),
        )
        # Every hub hears of it, so the stores that know the device may sync its phone hash too.
        pushback.add_pushback(conn, "consent_granted", {"device": device})


def withdraw_consent(conn: Connection, device: str, *, ts: float | None = None) -> dict[str, int]:
    """Delete the profile's personal data everywhere; keep the fact and date; tell the hubs."""
    ts = time.time() if ts is None else ts
    with conn.transaction():
        profiles.write_lock(conn, exclusive=True)
        # The same phone hash on other device ids goes too: the withdrawal is the person's.
        phones = profiles.erase_personal(conn, [device], ts)
        queued = conn.execute("DELETE FROM export_items WHERE device = ?", (device,)).rowcount
        conn.execute(
            "UPDATE consents SET pd_consent = 0, given = NULL, withdrawn = ?, source = 'withdrawal' WHERE device = ?",
            (ts, device),
        )
        profiles.add_event(conn, device, "consent_withdrawn", ts)
        pushback.add_pushback(conn, "consent_withdrawn", {"device": device})
    return {"personal_identifiers": phones, "queued_exports": queued}


def device_from_mac(chain_key: bytes, text: str) -> str:
    """The chain-wide device id of a MAC typed by a shopper, exactly as the sensors compute
    it. The ValueError of a malformed address says nothing about the input."""
    return Identifier(chain_key).device_id(parse_mac(text))


def optout(conn: Connection, device: str, *, source: str = "central", ts: float | None = None) -> bool:
    """Erase the device's profile and stop it being tracked anywhere; False if already out."""
    ts = time.time() if ts is None else ts
    with conn.transaction():
        profiles.write_lock(conn, exclusive=True)  # no batch in flight can re-create the profile after us
        new = (
            conn.execute(
                "INSERT INTO optouts (device, ts, source) VALUES (?, ?, ?) ON CONFLICT (device) DO NOTHING",
                (device, ts, source),
            ).rowcount
            > 0
        )
        # Its phone hash on other device ids (a phone the stores could not link) goes too.
        profiles.erase_personal(conn, [device], ts)
        for table in ("profile_stores", "identifiers", "profile_events", "consents", "export_items"):
            conn.execute(f"DELETE FROM {table} WHERE device = ?", (device,))
        _strip_from_segments(conn, device)
        if new:
            pushback.add_pushback(conn, "optout", {"device": device})
    return new


def _strip_from_segments(conn: Connection, device: str) -> None:
    for segment_id, version, csv in conn.all(
        "SELECT segment_id, version, members_csv FROM segment_versions WHERE members_csv LIKE ?", (f"%{device}%",)
    ):
        lines = [line for line in csv.splitlines() if line != device]
        conn.execute(
            "UPDATE segment_versions SET members_csv = ? WHERE segment_id = ? AND version = ?",
            ("\n".join(lines) + "\n", segment_id, version),
        )


@dataclass(frozen=True)
class Retention:
    events_days: float = 400.0
    profiles_days: float = 400.0
    batches_days: float = 30.0
    nonce_window_s: float = 300.0


def enforce_retention(conn: Connection, policy: Retention, *, now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    out: dict[str, int] = {}
    with conn.transaction():
        out["events"] = conn.execute(
            "DELETE FROM profile_events WHERE ts < ? AND kind <> 'consent_withdrawn'", (now - policy.events_days * DAY,)
        ).rowcount
        horizon = now - policy.profiles_days * DAY
        # A profile expires when no store has seen it since the horizon (the view's last_seen).
        stale = [r[0] for r in conn.all("SELECT device FROM profiles WHERE last_seen < ?", (horizon,))]
        out["profiles"] = len(stale)
        for table in ("identifiers", "profile_events", "export_items", "profile_stores"):
            out[table] = 0
        for i in range(0, len(stale), 500):
            chunk = stale[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for table in ("identifiers", "profile_events", "export_items", "profile_stores"):
                out[table] += conn.execute(f"DELETE FROM {table} WHERE device IN ({marks})", chunk).rowcount
            # Consents of expired profiles go too, except the bare fact of a withdrawal.
            conn.execute(f"DELETE FROM consents WHERE withdrawn IS NULL AND device IN ({marks})", chunk)
        # Old recounts keep their size and delta (sizes over time) but not their member lists.
        out["member_lists"] = conn.execute(
            "UPDATE segment_versions SET members_csv = 'device\n' WHERE ts < ? AND members_csv <> 'device\n'",
            (horizon,),
        ).rowcount
        out["nonces"] = conn.execute("DELETE FROM nonces WHERE ts < ?", (now - 2 * policy.nonce_window_s,)).rowcount
        out["batches"] = conn.execute(
            "DELETE FROM applied_batches WHERE received < ?", (now - policy.batches_days * DAY,)
        ).rowcount
    return out
