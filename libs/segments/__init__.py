"""The segment rule language's shared evaluation code, used by segmenter (real-time
consumer and scheduler) and admin (previews, exports): ``semantics`` (pure, what both
evaluators compute from the rule and the clock) and ``sql`` (rules compiled to SQL over
the segmenter's tables). The language itself is ``libs.schemas.rules``."""
