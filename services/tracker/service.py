"""Wiring of the tracker service: one router, no consumers."""

from libs.runtime.service import ServiceSpec
from services.tracker.api import router

SERVICE = ServiceSpec(name="tracker", routers=lambda: [router])
