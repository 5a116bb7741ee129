"""Wiring of the tracker service: one router (its hot routes also as fast routes), no
consumers."""

from libs.runtime.service import ServiceSpec
from services.tracker.api import FAST_ROUTES, router

SERVICE = ServiceSpec(name="tracker", routers=lambda: [router], fast_routes=lambda: FAST_ROUTES)
