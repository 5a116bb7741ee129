"""Prometheus collectors of the journey service."""

from prometheus_client import Counter

RUNS = Counter("hodhod_journey_runs_started_total", "Journey runs started")
RUNS_CARRIED = Counter(
    "hodhod_journey_runs_carried_total",
    "Journey starts skipped because the user's merged anonymous profile already ran the "
    "journey (an entry with merged_from)",
)
RUNS_ENDED = Counter(
    "hodhod_journey_runs_ended_total",
    "Journey runs that ended, by how (completed, exited, converted)",
    ["status"],
)
RUNS_REKEYED = Counter(
    "hodhod_journey_runs_rekeyed_total",
    "Anonymous runs moved to their user when the device logged in",
)
RUNS_ERASED = Counter("hodhod_journey_runs_erased_total", "Runs deleted by user erasures")
ENTRIES_REFUSED = Counter(
    "hodhod_journey_entries_refused_total",
    "Entries the entry rules refused (once, cooldown, max_concurrent)",
    ["reason"],
)
STEPS = Counter("hodhod_journey_steps_total", "Nodes entered by runs")
CAPPED = Counter("hodhod_journey_sends_capped_total", "Sends skipped by a journey's caps")
DEFERRED = Counter(
    "hodhod_journey_sends_deferred_total", "Sends deferred by a journey's per-second limit"
)
TASKS_DONE = Counter(
    "hodhod_journey_tasks_total",
    "Deferred sends and webhook calls finished, by kind and outcome",
    ["kind", "outcome"],
)
