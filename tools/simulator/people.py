"""Who is around the shop, when, and where they walk.

Coordinates in metres: the shop floor is ``0 <= x <= width``, ``0 <= y <= depth``; the shop
front (with the door at ``x = door_x``) is the line ``y = 0`` and the street is ``y < 0``
(pavement at y = -1.5 to -3, the far pavement at y = -10 to -12). "Inside" means ``y >= 0``.

* Passers-by walk along the street at U(1.0, 1.6) m/s (mean 1.3) for 10-60 s and never enter.
  Field observations give mean walking speeds of 80-95 m/min (1.33-1.58 m/s) across New Zealand
  sites (Finnis & Walton); the simulator's mean sits at the low edge of those site means.
  Inside the shop people walk between stops at 1.0 m/s (no source found).
* Visitors approach along the street (5-20 s), enter, stop at a few spots on the floor and
  leave again along the street. Dwell classes: look-in 1-5 min (35 %), browse 5-20 min (40 %),
  long 20-60 min (20 %), very long 1-2 h (5 %).
* How often each person's phone is on screen (``Person.screen_share``, which drives how often it
  scans) is drawn in ``store`` from ``scanning.SCREEN_SHARE``.
* Staff work a shift of 8-10 h inside, partly in the back room.
* Fixed devices (printer, POS terminal) sit at one spot for the whole capture window.

Arrivals follow an hourly profile with a lunch peak around 13:00 and an evening peak around
18:30 (street traffic adds a morning commute peak): ``weight(h) = base + lunch + evening``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field

from footfall.tools.simulator.devices import Device
from footfall.tools.simulator.phones import PhoneModel


@dataclass(frozen=True)
class Layout:
    width: float = 10.0
    depth: float = 20.0
    door_x: float = 5.0
    backroom_y: float = 17.0  # y beyond which is the back room (staff only)


DWELL_CLASSES = (  # (name, share, min s, max s)
    ("look-in", 0.35, 60.0, 300.0),
    ("browse", 0.40, 300.0, 1200.0),
    ("long", 0.20, 1200.0, 3600.0),
    ("very-long", 0.05, 3600.0, 7200.0),
)
# Other mixes of the same classes, for the evaluation (``simulate_day(dwell_shape=...)``): the
# figures' median dwell assumes this shop's ratio of median to mean (0.57 here), and a shop whose
# visits are mixed otherwise tests that. "alike": most visitors browse (a showroom, a salon:
# median/mean about 0.83); "skewed": most look in, a tenth stay over an hour (a kiosk with a
# café corner: about 0.26). Scenarios, not measurements: no source gives shops' dwell mixes.
DWELL_SHAPES: dict[str, tuple[float, ...]] = {
    "shop": tuple(share for _, share, _, _ in DWELL_CLASSES),
    "alike": (0.10, 0.75, 0.15, 0.0),
    "skewed": (0.55, 0.25, 0.10, 0.10),
}


def shop_weight(h: float) -> float:
    return 0.45 + 1.0 * math.exp(-(((h - 13.0) / 1.1) ** 2)) + 1.3 * math.exp(-(((h - 18.5) / 1.3) ** 2))


def street_weight(h: float) -> float:
    return shop_weight(h) + 0.8 * math.exp(-(((h - 8.5) / 1.0) ** 2))


def sample_time(rng: random.Random, start: float, end: float, day0: float, weight) -> float:
    """A time in [start, end) drawn with density proportional to ``weight(hour of day)``."""
    wmax = max(weight((start - day0) / 3600 + i * (end - start) / 3600 / 200) for i in range(201))
    while True:
        t = rng.uniform(start, end)
        if rng.random() * wmax <= weight((t - day0) / 3600):
            return t


@dataclass
class Person:
    """One appearance of one person on one day (a returning customer has one per day)."""

    id: str  # unique per appearance
    person: str  # stable across days
    kind: str  # passerby | visitor | staff | fixed
    day: int
    model: PhoneModel
    device: Device | None  # None: Wi-Fi switched off, never probes
    arrive: float
    leave: float
    inside: tuple[float, float] | None
    screen_share: float  # fraction of time the screen is on (scans more often)
    dwell_class: str | None = None
    returning: bool = False
    # Piecewise-linear path: times ascending, positions at those times.
    times: list[float] = field(default_factory=list)
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    def add(self, t: float, x: float, y: float) -> None:
        if self.times and t < self.times[-1]:
            t = self.times[-1]
        self.times.append(t)
        self.xs.append(x)
        self.ys.append(y)

    def position(self, t: float) -> tuple[float, float]:
        times = self.times
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.xs[0], self.ys[0]
        if i >= len(times):
            return self.xs[-1], self.ys[-1]
        t0, t1 = times[i - 1], times[i]
        f = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        return self.xs[i - 1] + f * (self.xs[i] - self.xs[i - 1]), self.ys[i - 1] + f * (self.ys[i] - self.ys[i - 1])


def _floor_spot(rng: random.Random, lay: Layout) -> tuple[float, float]:
    return rng.uniform(0.5, lay.width - 0.5), rng.uniform(1.0, lay.backroom_y - 0.5)


def _backroom_spot(rng: random.Random, lay: Layout) -> tuple[float, float]:
    return rng.uniform(0.5, lay.width - 0.5), rng.uniform(lay.backroom_y + 0.3, lay.depth - 0.3)


def walk_past(p: Person, rng: random.Random, lay: Layout) -> None:
    """A straight walk along the street, roughly centred on the shop front."""
    speed = rng.uniform(1.0, 1.6)
    length = speed * (p.leave - p.arrive)
    y = rng.uniform(-3.0, -1.5) if rng.random() < 0.75 else rng.uniform(-12.0, -10.0)
    centre = lay.door_x + rng.uniform(-0.3, 0.3) * length
    direction = 1 if rng.random() < 0.5 else -1
    p.add(p.arrive, centre - direction * length / 2, y)
    p.add(p.leave, centre + direction * length / 2, y)


def visit_path(p: Person, rng: random.Random, lay: Layout, approach: float, depart: float) -> None:
    """Street approach, door, a few stops inside, door, street."""
    enter, exit_ = p.inside
    side = 1 if rng.random() < 0.5 else -1
    p.add(p.arrive, lay.door_x + side * approach * 1.3, -2.0)
    p.add(enter, lay.door_x, 0.0)
    t = enter
    while True:
        x, y = _floor_spot(rng, lay)
        walk = math.hypot(x - lay.door_x, y) / 1.0
        stay = rng.uniform(30.0, 240.0)
        if t + walk + stay + 15.0 >= exit_:
            break
        p.add(t + walk, x, y)
        p.add(t + walk + stay, x, y)
        t += walk + stay
    p.add(exit_, lay.door_x, 0.0)
    side = 1 if rng.random() < 0.5 else -1
    p.add(p.leave, lay.door_x + side * depart * 1.3, -2.0)


def staff_path(p: Person, rng: random.Random, lay: Layout) -> None:
    enter, exit_ = p.inside
    p.add(p.arrive, lay.door_x - 20.0, -2.0)
    p.add(enter, lay.door_x, 0.0)
    t = enter
    while t < exit_:
        x, y = _backroom_spot(rng, lay) if rng.random() < 0.3 else _floor_spot(rng, lay)
        stay = rng.uniform(300.0, 1800.0)
        p.add(min(t + 20.0, exit_), x, y)
        p.add(min(t + 20.0 + stay, exit_), x, y)
        t += 20.0 + stay
    p.add(exit_, lay.door_x, 0.0)
    p.add(p.leave, lay.door_x + 20.0, -2.0)


def pick_dwell(rng: random.Random, shape: str = "shop") -> tuple[str, float]:
    r = rng.random()
    for (name, _, lo, hi), share in zip(DWELL_CLASSES, DWELL_SHAPES[shape], strict=True):
        if r < share:
            return name, rng.uniform(lo, hi)
        r -= share
    name, _, lo, hi = DWELL_CLASSES[-1]
    return name, rng.uniform(lo, hi)


_CUM: dict[int, tuple[tuple[PhoneModel, ...], list[float]]] = {}


def pick_model(rng: random.Random, models: tuple[PhoneModel, ...]) -> PhoneModel:
    # Keyed by identity (the model tuples are module constants); the tuple is kept alive with it.
    hit = _CUM.get(id(models))
    if hit is None or hit[0] is not models:
        hit = _CUM[id(models)] = (models, list(itertools.accumulate(m.weight for m in models)))
    cum = hit[1]
    return rng.choices(models, cum_weights=cum)[0]
