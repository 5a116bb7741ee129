"""Wiring of the attribution service: the matcher, the postback caller and the
verification sweep."""

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec, one_consumer
from services.attribution.consumer import TOPICS, Matcher
from services.attribution.postbacks import TOPICS as POSTBACK_TOPICS
from services.attribution.postbacks import Postbacks
from services.attribution.sweep import VerificationSweep

matcher = one_consumer("attribution.matcher", TOPICS, lambda r: Matcher(r.sessions, r.producer))
postbacks = one_consumer("attribution.postbacks", POSTBACK_TOPICS, lambda r: Postbacks(r.sessions))


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [*matcher(resources), *postbacks(resources)]


SERVICE = ServiceSpec(
    name="attribution",
    consumers=consumers,
    tasks=lambda r: [VerificationSweep(r.sessions, r.producer).run()],
)
