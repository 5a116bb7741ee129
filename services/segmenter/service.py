"""Wiring of the segmenter service: the profile consumer and the segment scheduler."""

from libs.runtime.service import ServiceSpec, one_consumer, timed_runner
from services.segmenter.consumer import TOPICS, ProfileUpdater
from services.segmenter.scheduler import SegmentScheduler

SERVICE = ServiceSpec(
    name="segmenter",
    # Per partition: a batch locks its profiles in one global order, as replicas do.
    consumers=one_consumer(
        "segmenter.profiles",
        TOPICS,
        lambda r: ProfileUpdater(r.sessions, r.producer),
        per_partition=True,
    ),
    timed=lambda r: [
        timed_runner(
            SegmentScheduler(
                r.sessions, r.producer, interval_s=r.settings.segment_scheduler_interval_s
            ),
            r,
        )
    ],
)
