"""Wiring of the admin service: the admin API (reads ClickHouse for reports)."""

from libs.runtime.service import ServiceSpec
from services.admin.api import router

SERVICE = ServiceSpec(name="admin", routers=lambda: [router], needs_clickhouse=True)
