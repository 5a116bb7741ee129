-- Impressions (GET /i/{token}) travel on the clicks topic with kind = 'impression'.
ALTER TABLE {db}.clicks ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'click';
