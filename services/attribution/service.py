"""Wiring of the attribution service: the matcher, the postback caller, the eraser and
the verification sweep."""

import logging
from collections.abc import Sequence
from pathlib import Path

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec, one_consumer, timed_runner
from services.attribution.consumer import TOPICS, Matcher
from services.attribution.erasure import TOPICS as ERASURE_TOPICS
from services.attribution.erasure import Eraser
from services.attribution.fraud import EMPTY, NetworkSet, parse_networks
from services.attribution.postbacks import TOPICS as POSTBACK_TOPICS
from services.attribution.postbacks import Postbacks
from services.attribution.sweep import VerificationSweep

log = logging.getLogger(__name__)


def datacenter_networks(path: str | None) -> NetworkSet:
    """The operator's data-centre list (``HODHOD_FRAUD_DATACENTER_FILE``), empty when unset.
    A missing file stops the service at start (``OSError``); lines that do not parse are
    skipped and logged."""
    if not path:
        return EMPTY
    parsed = parse_networks(Path(path).read_text(encoding="utf-8"))
    if parsed.bad_lines:
        log.warning(
            "fraud.datacenter_file.bad_lines", extra={"path": path, "lines": parsed.bad_lines[:20]}
        )
    log.info("fraud.datacenter_file", extra={"path": path, "networks": len(parsed.networks)})
    return parsed.networks


matcher = one_consumer(
    "attribution.matcher",
    TOPICS,
    lambda r: Matcher(
        r.sessions, r.producer, datacenter_networks(r.settings.fraud_datacenter_file)
    ),
    per_partition=True,  # replica-safe: a batch locks what it touches in one global order
)
postbacks = one_consumer(
    "attribution.postbacks",
    POSTBACK_TOPICS,
    lambda r: Postbacks(
        r.sessions,
        client=r.http,
        rate_per_s=r.settings.postback_rate_per_s,
        burst=r.settings.postback_burst,
    ),
)

eraser = one_consumer("attribution.erasure", ERASURE_TOPICS, lambda r: Eraser(r.sessions))


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [*matcher(resources), *postbacks(resources), *eraser(resources)]


SERVICE = ServiceSpec(
    name="attribution",
    consumers=consumers,
    timed=lambda r: [timed_runner(VerificationSweep(r.producer), r)],
)
