"""Prometheus collectors of the segmenter service."""

from prometheus_client import Counter

SEGMENT_CHANGES = Counter(
    "hodhod_segmenter_segment_changes_total", "Segment entries and exits", ["change"]
)
