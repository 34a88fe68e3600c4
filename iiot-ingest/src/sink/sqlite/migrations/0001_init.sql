-- iiot-ingest SQLite schema, version 1. Placeholder: __P__ (table prefix).
-- Times are INTEGER nanoseconds since the Unix epoch (exact).
-- u64 columns (sequence numbers, unsigned readings, counts) are declared without a
-- type, so SQLite converts nothing: values up to i64::MAX are stored as INTEGER,
-- larger ones as TEXT of 20 zero-padded digits. SQLite orders every INTEGER before
-- every TEXT, so max() and ORDER BY stay correct over the whole u64 range.

CREATE TABLE IF NOT EXISTS "__P__messages" (
    device_id        TEXT    NOT NULL,
    message_id       BLOB    NOT NULL,
    seq                      NOT NULL,
    gateway_time     INTEGER NOT NULL,
    received_at      INTEGER NOT NULL,
    topic            TEXT    NOT NULL,
    samples          INTEGER NOT NULL,
    firmware_version TEXT,
    gateway_id       TEXT,
    PRIMARY KEY (device_id, message_id)
);
CREATE INDEX IF NOT EXISTS "__P__messages_device_seq" ON "__P__messages" (device_id, seq);

-- One row per sample. value_type names the Value variant and the v_* column that
-- holds it. REAL cannot hold NaN (SQLite stores NULL) nor -0.0 (stored as 0): for
-- those two, v_double is NULL/0 and v_bytes holds the exact IEEE bits (8 bytes
-- big-endian for f64, 4 for f32).
CREATE TABLE IF NOT EXISTS "__P__samples" (
    time        INTEGER NOT NULL,
    device_id   TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    value_type  TEXT,
    v_double    REAL,
    v_int       INTEGER,
    v_uint,
    v_bool      INTEGER,
    v_text      TEXT,
    v_bytes     BLOB,
    quality     INTEGER NOT NULL,
    message_id  BLOB    NOT NULL,
    seq                 NOT NULL
);
CREATE INDEX IF NOT EXISTS "__P__samples_device_tag_time" ON "__P__samples" (device_id, tag, time);

CREATE TABLE IF NOT EXISTS "__P__data_loss" (
    device_id   TEXT    NOT NULL,
    message_id  BLOB    NOT NULL,
    first_seq           NOT NULL,
    last_seq            NOT NULL,
    lost_count          NOT NULL,
    reason      TEXT    NOT NULL,
    detected_at INTEGER NOT NULL,
    detail      TEXT,
    lost_bytes,
    PRIMARY KEY (device_id, message_id)
);

CREATE TABLE IF NOT EXISTS "__P__gaps" (
    device_id  TEXT    NOT NULL,
    first_seq          NOT NULL,
    last_seq           NOT NULL,
    first_seen INTEGER NOT NULL,
    announced  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, first_seq)
);

CREATE TABLE IF NOT EXISTS "__P__dead_letter" (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    topic       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    UNIQUE (received_at, topic, payload)
);
