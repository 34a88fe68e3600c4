-- iiot-ingest PostgreSQL schema, version 1.
-- Placeholders replaced before execution: __SCHEMA__ (schema), __P__ (table prefix).
-- u64 values (sequence numbers, unsigned readings, counts) are numeric(20,0): exact
-- over the whole u64 range. Times are timestamptz (microseconds; the sink drops the
-- sub-microsecond part of its nanosecond timestamps).

-- One row per telemetry batch written: the idempotency ledger. A redelivered batch
-- (same device_id, message_id) finds its row here and writes nothing.
CREATE TABLE IF NOT EXISTS "__SCHEMA__"."__P__messages" (
    device_id        text           NOT NULL,
    message_id       bytea          NOT NULL,
    seq              numeric(20, 0) NOT NULL,
    gateway_time     timestamptz    NOT NULL,
    received_at      timestamptz    NOT NULL,
    topic            text           NOT NULL,
    samples          integer        NOT NULL,
    firmware_version text,
    gateway_id       text,
    PRIMARY KEY (device_id, message_id)
);
CREATE INDEX IF NOT EXISTS "__P__messages_device_seq"
    ON "__SCHEMA__"."__P__messages" (device_id, seq);

-- The narrow table: one row per sample. value_type is the Value variant
-- (f64, f32, i64, u64, bool, string, bytes; NULL without a value) and says which
-- one of the v_* columns holds it; f32 is stored widened (exactly) in v_double.
CREATE TABLE IF NOT EXISTS "__SCHEMA__"."__P__samples" (
    time        timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    tag         text             NOT NULL,
    value_type  text,
    v_double    double precision,
    v_int       bigint,
    v_uint      numeric(20, 0),
    v_bool      boolean,
    v_text      text,
    v_bytes     bytea,
    quality     bigint           NOT NULL,
    message_id  bytea            NOT NULL,
    seq         numeric(20, 0)   NOT NULL
);
CREATE INDEX IF NOT EXISTS "__P__samples_device_tag_time"
    ON "__SCHEMA__"."__P__samples" (device_id, tag, time DESC);

-- Loss announced by gateways (DataLoss records), as such.
CREATE TABLE IF NOT EXISTS "__SCHEMA__"."__P__data_loss" (
    device_id   text           NOT NULL,
    message_id  bytea          NOT NULL,
    first_seq   numeric(20, 0) NOT NULL,
    last_seq    numeric(20, 0) NOT NULL,
    lost_count  numeric(20, 0) NOT NULL,
    reason      text           NOT NULL,
    detected_at timestamptz    NOT NULL,
    detail      text,
    lost_bytes  numeric(20, 0),
    PRIMARY KEY (device_id, message_id)
);

-- Open sequence gaps; a gap is identified by (device_id, first_seq).
CREATE TABLE IF NOT EXISTS "__SCHEMA__"."__P__gaps" (
    device_id  text           NOT NULL,
    first_seq  numeric(20, 0) NOT NULL,
    last_seq   numeric(20, 0) NOT NULL,
    first_seen timestamptz    NOT NULL,
    announced  boolean        NOT NULL,
    updated_at timestamptz    NOT NULL,
    PRIMARY KEY (device_id, first_seq)
);

-- Payloads that did not become rows, byte for byte. The unique index makes a
-- retried commit idempotent for dead letters too.
CREATE TABLE IF NOT EXISTS "__SCHEMA__"."__P__dead_letter" (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    payload     bytea       NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS "__P__dead_letter_identity"
    ON "__SCHEMA__"."__P__dead_letter" (received_at, topic, md5(payload));
