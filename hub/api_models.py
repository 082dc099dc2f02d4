"""Response models of the hub's API (its OpenAPI schema, ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Traffic(BaseModel):
    """Each figure is an estimate of people (see /api/method) with its 90 % range and what the sensors
    heard; where no estimate exists yet (``estimated`` false) the figure is the heard count."""

    visitors: float = Field(description="people who came in (estimate)")
    visitors_low: float | None = Field(None, description="90 % range, low end")
    visitors_high: float | None = Field(None, description="90 % range, high end")
    visitors_heard: float | None = Field(None, description="devices heard that came in (after linking)")
    passersby: float = Field(description="people who walked past without coming in (estimate)")
    passersby_low: float | None = None
    passersby_high: float | None = None
    passersby_heard: float | None = Field(None, description="devices heard outside that never came in")
    capture_rate: float | None = Field(description="visitors / (visitors + passers-by)")
    capture_rate_low: float | None = None
    capture_rate_high: float | None = None
    capture_rate_heard: float | None = Field(None, description="the same ratio of heard devices")
    mean_dwell_s: float | None = Field(description="mean visitor dwell, seconds")
    mean_dwell_s_low: float | None = None
    mean_dwell_s_high: float | None = None
    mean_dwell_s_heard: float | None = None
    estimated: bool = Field(True, description="false: no estimate yet, the figures are heard counts")


class Revision(BaseModel):
    """A link run that lowered a day's count from what the run before had shown."""

    day: str
    figure: Literal["visitors", "passersby"]
    from_: float = Field(alias="from", description="the day's figure before the run")
    to: float = Field(description="the day's figure after it")
    at: float = Field(description="when the run was (UTC seconds)")

    model_config = {"populate_by_name": True}


class FootfallTotals(Traffic):
    unique_visitors: float | None = Field(description="distinct people among the visitors (store-wide only)")
    unique_visitors_low: float | None = None
    unique_visitors_high: float | None = None
    median_dwell_s: float | None = None
    median_dwell_s_low: float | None = None
    median_dwell_s_high: float | None = None
    as_of: float | None = Field(None, description="estimates cover visits that began before this time")
    revisions: list[Revision] = Field(
        default_factory=list,
        description="every time a link run lowered a day's visitors or passers-by of this period (in whole "
        "people) from what was shown before: a provisional count revised (e.g. visits ending whose walk to "
        "the door was counted as passing), or a past day relinked (e.g. staff excluded); oldest run first",
    )


class FootfallPoint(Traffic):
    period: str = Field(description="YYYY-MM-DDTHH (hour), YYYY-MM-DD (day) or the Monday (week)")


class ZoneTraffic(Traffic):
    zone: str


class Footfall(BaseModel):
    start: str
    end: str
    granularity: str
    zone: str | None
    include_excluded: bool
    totals: FootfallTotals
    series: list[FootfallPoint]
    zones: list[ZoneTraffic]
    rolled_up_visits: int = Field(description="visits read from retention's hourly roll-up")
    explain: dict[str, str] = Field(default_factory=dict, description="how each figure is estimated, one line each")


class HistogramBin(BaseModel):
    lo_s: float
    hi_s: float | None
    visits: float


class DwellBucket(BaseModel):
    bucket: str
    lo_s: float
    hi_s: float | None
    visits: float
    share: float | None


class Engagement(BaseModel):
    start: str
    end: str
    zone: str | None
    include_excluded: bool
    visits: float = Field(description="visits (estimated people when estimated)")
    mean_dwell_s: float | None
    mean_dwell_s_low: float | None = None
    mean_dwell_s_high: float | None = None
    mean_dwell_s_heard: float | None = None
    median_dwell_s: float | None
    median_dwell_s_low: float | None = None
    median_dwell_s_high: float | None = None
    median_dwell_s_heard: float | None = None
    estimated: bool = True
    explain: str = ""
    dwell_caveat: str | None = Field(
        None,
        description="set when the estimated median dwell is outside the kind of shop the dwell figures "
        "were checked on: they may be far off, their range too",
    )
    buckets: list[DwellBucket]
    histogram: list[HistogramBin]
    rolled_up_visits: int


class FrequencyShare(BaseModel):
    frequency: str
    visitor_days: int
    share: float | None


class GapBucket(BaseModel):
    bucket: str
    min_days: int
    max_days: int | None
    visitor_days: int


class LoyaltyDay(BaseModel):
    day: str
    new: int
    returning: int


class RolledLoyalty(BaseModel):
    new_visitors: int
    returning_visitors: int


class Loyalty(BaseModel):
    start: str
    end: str
    include_excluded: bool
    unique_visitors: float
    unique_visitors_low: float | None = Field(None, description="90 % range of the estimated unique visitors")
    unique_visitors_high: float | None = None
    new_visitors: float
    returning_visitors: float
    return_rate: float | None = Field(description="share of the period's visitors who came before (estimate)")
    return_rate_low: float | None = None
    return_rate_high: float | None = None
    return_rate_heard: int | None = Field(
        None, description="visitors followed across days (a fixed address, or a random one asking for its networks)"
    )
    return_rate_networks: int | None = Field(
        None, description="of them, randomizing phones followed by the networks they ask for by name"
    )
    estimated: bool = True
    explain: str = ""
    visitor_days: int
    frequency: list[FrequencyShare]
    days_since_last_visit: list[GapBucket]
    median_days_since_last_visit: int | None
    series: list[LoyaltyDay]
    rolled_up: RolledLoyalty


class ZoneNow(BaseModel):
    zone: str
    inside: int
    devices: int
    age_s: float


class Now(BaseModel):
    now_in_store: float = Field(
        description="people inside: the live presence count (mean of the last 15 minutes) times the site's "
        "people-per-count ratio "
        "(hub/now.py), else the estimate at the latest estimated minute"
    )
    now_in_store_low: float | None = None
    now_in_store_high: float | None = None
    source: str = Field(
        description="'presence_calibrated' (live counts scaled to people), 'occupancy' (estimated people at "
        "the latest estimated minute), 'presence' (live sensor counts) or 'recent_visits'"
    )
    as_of_estimate: float | None = Field(
        None, description="when the estimate is for: the presence report, or the estimated minute (settle_s behind)"
    )
    as_of: float
    window_s: float
    recent_visitors: int
    zones: list[ZoneNow]


class DayTraffic(Traffic):
    date: str


class Change(BaseModel):
    visitors: float | None = Field(description="relative change, 0.1 = +10 %")
    passersby: float | None
    capture_rate_points: float | None = Field(description="difference of capture rates")


class CompareHour(BaseModel):
    hour: int
    today: float
    last_week: float


class Compare(BaseModel):
    as_of: float
    local_time: str
    tz: str = Field("UTC", description="the store's time zone (IANA name): every time the dashboard shows is in it")
    today: DayTraffic
    last_week_same_time: DayTraffic
    last_week_full_day: DayTraffic
    change: Change
    hourly: list[CompareHour]


class Sensor(BaseModel):
    site: str
    sensor: str
    status: str = Field(
        description="online, offline, stale, or replayed (data from a recorded capture played back, as in the demo)"
    )
    state: str | None
    version: str | None
    online_since: float | None
    offline_since: float | None
    last_message: float | None
    last_message_age_s: float | None
    messages: int | None
    message_rate: float | None
    backlog: int | None
    dropped: int | None
    health: dict[str, Any] | None


class Sensors(BaseModel):
    as_of: float
    stale_after_s: float
    online: int
    offline: int
    stale: int
    replayed: int = 0
    sensors: list[Sensor]


class Reject(BaseModel):
    reason: str
    count: int
    last_at: float
    last_detail: str | None


class Rejects(BaseModel):
    total: int
    reasons: list[Reject]


class LoginRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class Me(BaseModel):
    kind: str
    name: str


class SegmentPoint(BaseModel):
    ts: float = Field(description="time of the recount (unix seconds)")
    members: int


class SegmentProfile(BaseModel):
    devices: int = Field(description="devices the profile describes (members seen in the window; sampled past 5000)")
    median_dwell_min: float = Field(description="median of the devices' median visit dwell, minutes")
    typical_hour: float = Field(description="mean local hour of arrival on the clock circle (12.5 = 12:30)")
    typical_time: str = Field(description="typical_hour as HH:MM")
    visitor_share: float = Field(description="mean share of the devices' visits that came in (1 - passerby_share)")
    passerby_share: float = Field(description="mean share of the devices' visits that only passed by")
    visit_days: float = Field(description="mean distinct visit days per device in the window")
    weekend_share: float = Field(description="mean share of visits on Saturday/Sunday")
    recency_days: float = Field(description="mean days since last seen")
    zones: float = Field(description="mean distinct zones visited")


class Segment(BaseModel):
    id: int
    name: str
    kind: str = Field(description="'rule' (conditions on device fields) or 'cluster' (behavioural clustering)")
    mode: str = Field(description="'dynamic' (re-evaluated at every refresh) or 'static' (members fixed)")
    current: bool = Field(description="false for a cluster that the latest clustering run no longer produced")
    size: int = Field(description="members now")
    updated: float = Field(description="when the members were last set")
    rule: str | None = Field(description="the rule as text (rule segments)")
    definition: dict[str, Any] | None = Field(description="rule JSON and lookback, or the clustering criterion")
    history: list[SegmentPoint] = Field(description="the latest recounts, oldest first")
    profile: SegmentProfile | None


class Segments(BaseModel):
    segments: list[Segment]


class KScore(BaseModel):
    k: int
    silhouette: float


class Cluster(BaseModel):
    id: int
    label: str = Field(description="readable name from the centroid, e.g. 'lunch-time regulars'")
    size: int
    share: float | None = Field(description="size / devices clustered")
    profile: SegmentProfile | None
    history: list[SegmentPoint]


class Clusters(BaseModel):
    as_of: float | None = Field(description="when the latest clustering ran; null if never")
    k: int = Field(description="number of clusters chosen")
    criterion: str | None
    silhouette: float | None = Field(
        description="mean silhouette coefficient of the chosen k (-1..1, higher is better)"
    )
    silhouette_by_k: list[KScore]
    devices: int
    clusters: list[Cluster]


class OccupancyPoint(BaseModel):
    start: float = Field(description="window start, UNIX seconds")
    time: str = Field(description="window start, local time")
    people: float | None = Field(description="people inside, averaged over the window; null: not estimated yet")


class Occupancy(BaseModel):
    start: str
    end: str
    window_s: int
    explain: str
    series: list[OccupancyPoint]


class Method(BaseModel):
    explain: dict[str, str]
    days: dict[str, dict[str, Any]] = Field(description="per estimated day: what its model was fitted on")
    calibration: dict[str, Any] = Field(description="the site's calibration against a real count, if any")
