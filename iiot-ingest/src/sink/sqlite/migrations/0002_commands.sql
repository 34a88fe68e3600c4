-- iiot-ingest SQLite schema, version 2: command tracking. Placeholder: __P__ (table prefix).
-- Times are INTEGER nanoseconds since the Unix epoch; v_uint and r_uint follow the
-- u64 rule of version 1 (INTEGER up to i64::MAX, else 20-digit TEXT), and
-- v_bytes/r_bytes keep the exact bits of NaN and -0.0 floats as in the samples table.

-- One row per command (device_id, command_id), upserted from the command as the
-- issuer published it and from the device's acks, in any order (see the
-- iiot_ingest::commands docs for the rules). The command's columns are NULL while
-- only acks were seen. state is the last state in snake_case, or
-- expired_unconfirmed (no final ack within expires_at plus the grace period).
CREATE TABLE IF NOT EXISTS "__P__commands" (
    device_id    TEXT    NOT NULL,
    command_id   BLOB    NOT NULL,
    target       TEXT,
    action       TEXT,
    op           TEXT,
    value_type   TEXT,
    v_double     REAL,
    v_int        INTEGER,
    v_uint,
    v_bool       INTEGER,
    v_text       TEXT,
    v_bytes      BLOB,
    issuer       TEXT,
    reason       TEXT,
    issued_at    INTEGER,
    expires_at   INTEGER,
    state        TEXT    NOT NULL,
    ack_reason   TEXT,
    detail       TEXT,
    result_type  TEXT,
    r_double     REAL,
    r_int        INTEGER,
    r_uint,
    r_bool       INTEGER,
    r_text       TEXT,
    r_bytes      BLOB,
    received_at  INTEGER,
    delivered_at INTEGER,
    final_at     INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (device_id, command_id)
);
-- The expiry sweep reads only open commands.
CREATE INDEX IF NOT EXISTS "__P__commands_open_expiry" ON "__P__commands" (expires_at)
    WHERE state IN ('pending', 'queued', 'delivered', 'validating', 'executing');
