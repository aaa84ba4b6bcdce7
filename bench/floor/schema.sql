-- The floor's audit table: one row per request, shaped like a CloudTrail
-- record of a KMS call.  Used by FLOOR_MODE=crypto_audit (configuration (b)).
CREATE TABLE IF NOT EXISTS bench_floor_audit (
    id                 bigserial PRIMARY KEY,
    event_time         timestamptz NOT NULL,
    event_id           uuid        NOT NULL,
    request_id         uuid        NOT NULL,
    event_name         text        NOT NULL,
    event_source       text        NOT NULL,
    aws_region         text        NOT NULL,
    source_ip_address  text        NOT NULL,
    user_agent         text        NOT NULL,
    access_key_id      text        NOT NULL,
    key_id             text        NOT NULL,
    request_parameters jsonb       NOT NULL,
    response_elements  jsonb,
    error_code         text,
    read_only          boolean     NOT NULL
);
CREATE INDEX IF NOT EXISTS bench_floor_audit_event_time ON bench_floor_audit (event_time);
