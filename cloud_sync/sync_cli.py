"""``footfall sync run|once|status``: the hub's side of the central sync.

``run`` loops: every ``interval_s`` it snapshots changes into the outbox, pulls pushback
(opt-outs to the sensors), and sends the outbox (backing off while the centre is down).
``once`` does one such cycle and exits 0 when everything was delivered, 1 otherwise.
``status`` prints the outbox, cursors and counters.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from footfall.cloud_sync import outbox
from footfall.cloud_sync.config import ConfigError, SyncConfig, load

if TYPE_CHECKING:
    from footfall.cloud_sync.sender import Sender

log = logging.getLogger(__name__)


def register_sync(sub: argparse._SubParsersAction) -> None:
    """Add ``footfall sync`` with ``run``, ``once`` and ``status``."""
    p = sub.add_parser("sync", help="send this hub's data to the central service and apply its pushback")
    actions = p.add_subparsers(dest="sync_command", metavar="ACTION")
    for name, helptext, func in (
        ("run", "sync continuously (the service)", cmd_run),
        ("once", "one cycle: enqueue, pushback, send; exit 1 if something is left undelivered", cmd_once),
        ("status", "outbox, cursors and counters", cmd_status),
    ):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("--config", help="sync TOML file ([sync] table); env FOOTFALL_SYNC_* overrides")
        if name == "status":
            a.add_argument("--json", action="store_true", help="machine-readable output")
        if name != "status":
            a.add_argument("--no-pushback", action="store_true", help="do not pull pushback from the centre")
        a.set_defaults(func=func)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _open(args: argparse.Namespace) -> tuple[SyncConfig, Any]:
    from footfall.hub import store

    cfg = load(args.config)
    return cfg, store.connect(cfg.db)


def cycle(conn: Any, cfg: SyncConfig, sender: Sender, *, pull: bool = True, deadline: float | None = None) -> bool:
    """One sync cycle; True when the outbox is empty afterwards and pushback was applied."""
    from footfall.cloud_sync import changes, fleet, pushback

    try:
        changes.enqueue_changes(
            conn,
            cfg.site,
            tz=cfg.tz,
            max_rows=cfg.outbox_max_rows,
            droppable=cfg.droppable_kinds,
            aggregate_days=cfg.aggregate_days,
            heartbeat_s=cfg.heartbeat_s,
            visit_events=cfg.visit_events,
            event_settle_s=cfg.event_settle_s,
            event_backfill_days=cfg.event_backfill_days,
        )
    except Exception:
        # A broken snapshot must not stop delivery of what is already queued.
        log.exception("sync: enqueueing changes failed")
    pulled = True
    if pull:
        try:
            pushback.pull(conn, cfg, sender.secret, session=sender.session, clock=sender.clock)
        except (pushback.PushbackError, OSError) as exc:
            pulled = False
            log.warning("sync: pushback not applied this cycle: %s", exc)
        except Exception:
            # Whatever the pushback tripped on, the batches still go out.
            pulled = False
            log.exception("sync: pushback failed")
    once = deadline is None
    result = sender.drain(max_attempts=cfg.once_max_attempts if once else None, deadline=deadline)
    if cfg.fleet_report:
        try:
            fleet.send(conn, cfg, sender.secret, sender.clock, session=sender.session)
        except Exception:
            # The fleet page going stale is visible at the centre; it must not stop the data.
            log.exception("sync: fleet report failed")
    if sender.clock.measured is not None:
        with conn:
            outbox.set_state(conn, "clock_offset_s", round(sender.clock.measured, 1))
    return result.ok and pulled


def cmd_once(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.sender import Sender

    try:
        cfg, conn = _open(args)
        sender = Sender(conn, cfg, cfg.secret())
    except ConfigError as exc:
        print(f"footfall sync: {exc}", file=sys.stderr)
        return 2
    ok = cycle(conn, cfg, sender, pull=not args.no_pushback)
    return 0 if ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.sender import Sender

    try:
        cfg, conn = _open(args)
        stop = threading.Event()
        sender = Sender(conn, cfg, cfg.secret(), stop=stop)
    except ConfigError as exc:
        print(f"footfall sync: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log.info("sync: %s -> %s every %.0fs", cfg.site, cfg.url, cfg.interval_s)
    while not stop.is_set():
        started = time.monotonic()
        try:
            cycle(conn, cfg, sender, pull=not args.no_pushback, deadline=started + cfg.interval_s)
        except Exception:
            # A locked database or a bug in one cycle must not end the service; the outbox
            # keeps everything, so the next cycle simply takes it up again.
            log.exception("sync: cycle failed")
        stop.wait(max(0.0, started + cfg.interval_s - time.monotonic()))
    return 0


def status(conn: Any) -> dict[str, Any]:
    batch = conn.execute(
        "SELECT batch_id, seq, records, attempts, last_error FROM sync_batches ORDER BY seq"
    ).fetchone()
    parked = conn.execute("SELECT count(*) FROM sync_outbox WHERE parked IS NOT NULL").fetchone()[0]
    return {
        "pending": outbox.pending_count(conn),
        "parked": parked,
        "inflight_batch": dict(zip(("batch_id", "seq", "records", "attempts", "last_error"), batch, strict=True))
        if batch
        else None,
        "next_seq": int(outbox.get_state(conn, "next_seq", "1") or 1),
        "acked_seq": outbox.get_state(conn, "acked_seq"),
        "pushback_cursor": outbox.get_state(conn, "pushback_cursor"),
        "last_success": outbox.get_state(conn, "last_success"),
        "last_error": outbox.get_state(conn, "last_error"),
        # centre minus hub clock, from the centre's last trusted reply (cloud_sync/clock.py)
        "clock_offset_s": outbox.get_state(conn, "clock_offset_s"),
        "fleet_last_sent": outbox.get_state(conn, "fleet_last_sent"),
        "optouts": conn.execute("SELECT count(*) FROM optouts").fetchone()[0],
        "counters": outbox.counters(conn),
    }


def cmd_status(args: argparse.Namespace) -> int:
    try:
        cfg, conn = _open(args)
    except ConfigError as exc:
        print(f"footfall sync: {exc}", file=sys.stderr)
        return 2
    info = status(conn) | {"site": cfg.site, "url": cfg.url}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    for key, value in info.items():
        print(f"{key:16} {json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m footfall.cloud_sync.sync_cli sync once --config ...``)."""
    parser = argparse.ArgumentParser(prog="footfall")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    register_sync(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
