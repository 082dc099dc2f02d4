"""``python -m footfall.tools.probe_returning``: the return rate's followed visitors set against
the simulated people (held-out seed 12: a small store, 80 % randomizing phones, three days)."""

from __future__ import annotations

from pathlib import Path

from footfall.tools import probe_returning


def test_the_phones_followed_by_their_networks_are_visitors_and_returners_are_found(tmp_path: Path) -> None:
    days = probe_returning.probe([12], tmp_path)
    assert [d.index for d in days] == [0, 1, 2]
    followed = sum(d.networks for d in days)
    assert followed >= 10
    # Heard asking for its networks for two minutes from a visit: a visitor, not a passer-by.
    assert sum(d.not_visitors for d in days) <= 0.1 * followed
    later = days[1:]
    assert sum(d.found for d in later) >= 1
    assert sum(d.false_matches for d in later) <= sum(d.found for d in later)
    assert all(d.truth is not None and d.rate(True) is not None for d in later)
    text = probe_returning.report(days)
    assert "return rate, with networks" in text and "return rate, fixed addresses" in text
