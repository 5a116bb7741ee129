-- Every statement of an attribution is kept (readers take the latest by attributed_at).
-- Keyed by attribution id alone, a restatement and the statement it replaces shared a
-- sorting key, and a merge kept the row inserted last: when the older statement's
-- partition was written after the newer one's, the newer statement was merged away.
CREATE TABLE IF NOT EXISTS {db}.attributions_by_statement
(
    app_id         LowCardinality(String),
    attribution_id String,
    user_key       String,
    device_id      String,
    install_ts     DateTime64(3, 'UTC'),
    attributed_at  DateTime64(3, 'UTC'),
    method         LowCardinality(String),
    kind           LowCardinality(String),
    status         LowCardinality(String),
    tracker_token  LowCardinality(Nullable(String)),
    click_id       Nullable(String),
    payload        String,
    _partition     UInt16,
    _offset        UInt64,
    _inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(attributed_at)
ORDER BY (app_id, toDate(attributed_at), attribution_id, attributed_at);
INSERT INTO {db}.attributions_by_statement SELECT * FROM {db}.attributions;
RENAME TABLE {db}.attributions TO {db}.attributions_by_attribution, {db}.attributions_by_statement TO {db}.attributions;
DROP TABLE {db}.attributions_by_attribution;
