"""The segment rule language, a configuration language (marketers and backends write its
rules; admin stores them in ``segments``), and everything that answers it:

- ``language`` — the parser and its frozen nodes (``parse_rule``, ``RuleError``);
- ``semantics`` — what both evaluators compute alike from a rule and the clock;
- ``profile`` — what a rule is answered on (``ProfileState``, ``ProfileView``);
- ``evaluation`` — the in-memory evaluator (``evaluate``) and the RFM helpers;
- ``sql`` — the same rules compiled to SQL over the profile tables (bulk, previews);
- ``loader`` — a read-only ``ProfileView`` of one user from Postgres.

``language``, ``semantics``, ``profile`` and ``evaluation`` are pure (no I/O framework is
imported); ``sql`` and ``loader`` need SQLAlchemy. Used by the segmenter (memberships),
admin (validation, previews, exports) and journeys (condition nodes); services never
import each other, so the language and its evaluators live here. This package imports
nothing itself: import the module you need.
"""
