"""Prometheus collectors of the segmenter service."""

from prometheus_client import Counter

SEGMENT_CHANGES = Counter(
    "hodhod_segmenter_segment_changes_total", "Segment entries and exits", ["change"]
)
MERGES = Counter(
    "hodhod_segmenter_profile_merges_total",
    "Anonymous device profiles merged into their user's profile at login",
)
ERASURES = Counter("hodhod_segmenter_erasures_total", "Users erased on admin's request")
