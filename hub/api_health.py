"""The dashboard's health area: each sensor's state, and the messages ingest rejected.

One module per dashboard area (as datasette keeps one per view): ``hub/api.py`` mounts
:func:`router` behind its login.
"""

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

from footfall.hub import metrics_health
from footfall.hub.api_models import Reject, Rejects, Sensor, Sensors
from footfall.hub.api_responses import _csv_response, _format, _json

if TYPE_CHECKING:
    from footfall.hub.api import WebSettings


def _columns(model: type[Any], *drop: str) -> list[str]:
    """A report's CSV header when it has no rows: its model's fields."""
    return [name for name in model.model_fields if name not in drop]


def router(settings: "WebSettings", Conn: Any) -> APIRouter:
    """The /api health routes (authentication is added by the caller); ``Conn`` is the app's
    connection dependency."""
    routes = APIRouter()
    fmt_q = Query("json", description="json or csv")

    @routes.get("/api/sensors", response_model=Sensors, tags=["health"])
    def sensors(conn: Conn, format: str = fmt_q) -> Any:
        """Sensor health: online, offline or stale, with rates and backlog."""
        out = metrics_health.sensor_health(conn, now=settings.clock(), stale_after_s=settings.stale_after_s)
        if _format(format) == "csv":
            return _csv_response(out["sensors"], "sensors", _columns(Sensor, "health"))
        return _json(out)

    @routes.get("/api/rejects", response_model=Rejects, tags=["health"])
    def rejects(conn: Conn, format: str = fmt_q) -> Any:
        """Messages ingest rejected, by reason."""
        out = metrics_health.rejects(conn)
        if _format(format) == "csv":
            return _csv_response(out["reasons"], "rejects", _columns(Reject))
        return _json(out)

    return routes
