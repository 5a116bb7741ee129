"""Wiring of the admin service: the admin API (reads ClickHouse for reports)."""

from libs.runtime.service import ServiceSpec
from services.admin.api import router
from services.admin.app_api import router as app_router
from services.admin.journeys_api import router as journeys_router
from services.admin.reports_api import router as reports_router
from services.admin.segments_api import router as segments_router
from services.admin.users_api import router as users_router

SERVICE = ServiceSpec(
    name="admin",
    routers=lambda: [
        router,
        users_router,
        app_router,
        segments_router,
        reports_router,
        journeys_router,
    ],
    needs_clickhouse=True,
)
