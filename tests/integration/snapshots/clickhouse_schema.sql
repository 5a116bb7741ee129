CREATE TABLE hodhod.attributions
(
`app_id` LowCardinality(String),
`attribution_id` String,
`user_key` String,
`device_id` String,
`install_ts` DateTime64(3, 'UTC'),
`attributed_at` DateTime64(3, 'UTC'),
`method` LowCardinality(String),
`kind` LowCardinality(String),
`status` LowCardinality(String),
`tracker_token` LowCardinality(Nullable(String)),
`click_id` Nullable(String),
`payload` String,
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(attributed_at)
ORDER BY (app_id, toDate(attributed_at), attribution_id, attributed_at)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.clicks
(
`app_id` LowCardinality(String),
`click_id` String,
`tracker_token` LowCardinality(String),
`ts` DateTime64(3, 'UTC'),
`ip` Nullable(String),
`user_agent` Nullable(String),
`adid` Nullable(String),
`is_bot` Bool,
`payload` String,
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3),
`kind` LowCardinality(String) DEFAULT 'click'
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, tracker_token, toDate(ts), click_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.config_changes
(
`app_id` LowCardinality(String),
`change_id` String,
`entity` LowCardinality(String),
`entity_id` String,
`action` LowCardinality(String),
`ts` DateTime64(3, 'UTC'),
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, toDate(ts), change_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.deliveries
(
`app_id` LowCardinality(String),
`receipt_id` String,
`job_id` String,
`user_key` String,
`channel` LowCardinality(String),
`status` LowCardinality(String),
`provider` LowCardinality(String),
`provider_message_id` Nullable(String),
`error` Nullable(String),
`journey_id` Nullable(String),
`ts` DateTime64(3, 'UTC'),
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, user_key, receipt_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.events
(
`app_id` LowCardinality(String),
`event_id` String,
`name` LowCardinality(String),
`user_key` String,
`device_id` Nullable(String),
`user_id` Nullable(String),
`ts` DateTime64(3, 'UTC'),
`received_at` DateTime64(3, 'UTC'),
`source` LowCardinality(String),
`platform` LowCardinality(Nullable(String)),
`app_version` Nullable(String),
`timezone` Nullable(String),
`session_id` Nullable(String),
`props` String,
`revenue` Nullable(Float64),
`currency` LowCardinality(Nullable(String)),
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, toDate(ts), name, event_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.installs
(
`app_id` LowCardinality(String),
`event_id` String,
`device_id` String,
`ts` DateTime64(3, 'UTC'),
`platform` LowCardinality(Nullable(String)),
`referrer` Nullable(String),
`payload` String,
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, toDate(ts), event_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.schema_migrations
(
`version` UInt32,
`name` String,
`applied_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.segment_changes
(
`app_id` LowCardinality(String),
`change_id` String,
`user_key` String,
`segment_id` LowCardinality(String),
`change` LowCardinality(String),
`ts` DateTime64(3, 'UTC'),
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, toDate(ts), change_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.send_jobs
(
`app_id` LowCardinality(String),
`job_id` String,
`user_key` String,
`channel` LowCardinality(String),
`transactional` Bool,
`journey_id` Nullable(String),
`created_at` DateTime64(3, 'UTC'),
`payload` String,
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (app_id, toDate(created_at), job_id)
SETTINGS index_granularity = 8192;

CREATE TABLE hodhod.verifications
(
`app_id` LowCardinality(String),
`verification_id` String,
`user_id` String,
`ts` DateTime64(3, 'UTC'),
`payload` String,
`_partition` UInt16,
`_offset` UInt64,
`_inserted_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, toDate(ts), verification_id)
SETTINGS index_granularity = 8192;
