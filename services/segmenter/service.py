"""Wiring of the segmenter service: the profile consumer."""

from libs.runtime.service import ServiceSpec, one_consumer
from services.segmenter.consumer import TOPICS, ProfileUpdater

SERVICE = ServiceSpec(
    name="segmenter",
    consumers=one_consumer(
        "segmenter.profiles", TOPICS, lambda r: ProfileUpdater(r.sessions, r.producer)
    ),
)
