"""A count already shown that a later link run lowers is recorded and shown as a revision
(``link.revisions``, ``FootfallTotals.revisions``), never taken back silently: issue 11's live
figures may be "revised by small amounts, visibly".

A simulated store day goes through the real pipeline (simulator, agents, ingest, the link job)
into a real SQLite hub; the day's shown figures are then set higher, as a run before would have
left them, and the link job runs again over the same data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from footfall.hub import link
from footfall.tools.evaluate_pipeline import Scenario, api_client, ingest, simulate

DAY = "2026-11-02"
CLOCK = datetime(2026, 11, 2, 18, 0, tzinfo=UTC).timestamp()


def test_revisions_keep_what_was_shown_and_only_record_drops() -> None:
    shown = {"visitors": 120.0, "passersby": 600.0, "revisions": [{"figure": "visitors", "from": 1, "to": 0, "at": 5}]}
    out = link.revisions(shown, {"visitors": 121.0, "passersby": 597.5}, now=100.0)
    assert out == [
        {"figure": "visitors", "from": 1, "to": 0, "at": 5},
        {"figure": "passersby", "from": 600.0, "to": 597.5, "at": 100.0},
    ]
    assert link.revisions(None, {"visitors": 1.0, "passersby": 2.0}, now=1.0) == []
    # A tenth of a person less does not change the whole people the page shows: no step back.
    assert link.revisions({"visitors": 10.4, "passersby": 5.0}, {"visitors": 10.0, "passersby": 5.0}, now=1.0) == []
    many = {"visitors": 9.0, "passersby": 9.0, "revisions": [{"figure": "visitors"}] * link.MAX_REVISIONS}
    assert len(link.revisions(many, {"visitors": 8.0, "passersby": 9.0}, now=1.0)) == link.MAX_REVISIONS


@pytest.fixture(scope="module")
def linked_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """The hub database of a small store at 18:00, linked as the hub's job links it."""
    work = tmp_path_factory.mktemp("revisions")
    run = simulate(Scenario(seed=21, scale=0.4), work)
    writer, _ = ingest(run, work / "hub.db", until=CLOCK)
    link.relink(writer.conn, writer.config, since=0, now=CLOCK)
    yield work / "hub.db", writer
    writer.conn.close()


def _day(conn) -> dict:
    return json.loads(conn.execute("SELECT figures FROM estimates WHERE day = ? AND hour = -1", (DAY,)).fetchone()[0])


def test_a_run_that_lowers_a_shown_count_records_it_and_the_api_shows_it(linked_store) -> None:
    db, writer = linked_store
    conn, cfg = writer.conn, writer.config
    first = _day(conn)
    assert first["passersby"] > 0 and first["revisions"] == []
    # What a run before had shown: ten passers-by more than the same data gives now.
    shown = first["passersby"] + 10.0
    conn.execute(
        "UPDATE estimates SET figures = json_set(figures, '$.passersby', ?) WHERE day = ? AND hour = -1",
        (shown, DAY),
    )
    conn.commit()
    link.relink(conn, cfg, since=0, now=CLOCK)
    again = _day(conn)
    assert again["passersby"] == pytest.approx(first["passersby"])
    assert again["revisions"] == [{"figure": "passersby", "from": shown, "to": again["passersby"], "at": CLOCK}]
    # A run that changes nothing adds nothing and keeps the record.
    link.relink(conn, cfg, since=0, now=CLOCK)
    assert _day(conn)["revisions"] == again["revisions"]

    # The API gives it with the period's totals, in the figures' terms: a door-count calibration
    # scales it as it scales the figure.
    conn.execute(
        "INSERT INTO calibrations (created, visitors, passersby, source, fit) VALUES (?, 1.0, 2.0, 'test', '{}')",
        (time.time(),),
    )
    conn.commit()
    client = api_client(db, CLOCK)
    t = client.get("/api/footfall", params={"start": DAY, "end": DAY}).json()["totals"]
    assert t["revisions"] == [
        {
            "day": DAY,
            "figure": "passersby",
            "from": pytest.approx(2 * shown),
            "to": pytest.approx(2 * again["passersby"]),
            "at": CLOCK,
        }
    ]
    assert t["passersby"] == pytest.approx(2 * again["passersby"], abs=0.1)
    # Nested, it stays out of the CSV; a period without revisions has an empty list.
    assert "revisions" not in client.get("/api/footfall", params={"start": DAY, "end": DAY, "format": "csv"}).text
    other = client.get("/api/footfall", params={"start": "2026-11-01", "end": "2026-11-01"}).json()["totals"]
    assert other["revisions"] == []
