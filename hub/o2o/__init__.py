"""O2O retargeting (seed 004, case 1): passers-by and short visitors -> partner matching -> SMS
with a personal coupon or an ad-platform segment -> POS redemption -> attribution and ROMI.

Modules: ``scenarios`` (what and whom), ``runner`` (a run), ``partner`` (HTTP connector),
``coupons``, ``consent``, ``pos`` (till API), ``reports`` (attribution, ROMI, invoice),
``register`` (data transfer register), ``adsegment`` (the ad-platform segment: snapshots,
share links), ``privacy`` (partner hashes unkeyed only while needed), ``optout`` (a person's
hashes removed everywhere, files included), ``housekeeping`` (retention of it all), ``tables``,
``web`` (routers), ``cli`` (``footfall o2o``).
"""
