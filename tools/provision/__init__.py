"""``footfall provision``: a site CA, per-sensor credentials and a locked-down Mosquitto.

Public API (the CLI in ``footfall.tools.provision_cli`` is a thin layer over it)::

    init_site(site_dir, site, hosts, broker=BrokerConfig(...), bridge=Bridge(...)) -> SiteState
    add_sensor(site_dir, sensor, settings=AgentSettings(...)) -> bundle directory
    platform_settings("openwrt", channels=[1, 6, 11]) -> AgentSettings  # a platform's defaults
    rotate(site_dir, sensor) -> bundle directory      # old password and certificate stop working
                                                      # (also footfall-hub, footfall-sync: hub/)
    revoke(site_dir, sensor)                          # out of passwd and ACL, certificate in the CRL
    configure_hub(site_dir, port=..., require_certificate=..., bridge=...) -> SiteState
                                                      # (issues footfall-sync on an older site)
    refresh_crl(site_dir, if_expiring_within=60) -> SiteState | None   # None: still valid long enough
    rotate_hash_key(site_dir) -> [bundle directories]   # new device-id key; every sensor re-issued
    load(site_dir) -> SiteState

After each change copy ``<site_dir>/broker/`` to the hub and send Mosquitto SIGHUP
(``systemctl reload mosquitto``): it re-reads passwd and ACL; see docs/operator-guide.md.
"""

from footfall.tools.provision.bundle import PLATFORMS, AgentSettings, platform_settings
from footfall.tools.provision.crl import crl_days_left, refresh_crl
from footfall.tools.provision.mosquitto import (
    HUB_USER,
    SYNC_USER,
    Bridge,
    BrokerConfig,
    hash_password,
    verify_password,
)
from footfall.tools.provision.site import (
    add_sensor,
    configure_hub,
    init_site,
    render_broker,
    revoke,
    rotate,
    rotate_hash_key,
)
from footfall.tools.provision.sitedir import ProvisionError
from footfall.tools.provision.state import SiteState, load

__all__ = [
    "HUB_USER",
    "PLATFORMS",
    "SYNC_USER",
    "AgentSettings",
    "Bridge",
    "BrokerConfig",
    "ProvisionError",
    "SiteState",
    "add_sensor",
    "configure_hub",
    "crl_days_left",
    "hash_password",
    "init_site",
    "load",
    "platform_settings",
    "refresh_crl",
    "render_broker",
    "revoke",
    "rotate",
    "rotate_hash_key",
    "verify_password",
]
