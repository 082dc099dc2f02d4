"""O2O retargeting (seed 004, case 1): passers-by and short visitors -> partner matching -> SMS
with a personal coupon or an ad-platform segment -> POS redemption -> attribution and ROMI.

Modules: ``scenarios`` (what and whom), ``runner`` (a run), ``partner`` (HTTP connector),
``coupons``, ``consent``, ``pos`` (till API), ``reports`` (attribution, ROMI, invoice),
``register`` (data transfer register), ``web`` (routers), ``cli`` (``footfall o2o``).
"""
