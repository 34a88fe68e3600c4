-- iiot-ingest PostgreSQL schema, version 2: command tracking.
-- Placeholders replaced before execution: __SCHEMA__ (schema), __P__ (table prefix).

-- One row per command (device_id, command_id), upserted from the command as the
-- issuer published it and from the device's acks, in any order (see the
-- iiot_ingest::commands docs for the rules). The command's columns are NULL while
-- only acks were seen; value_type/v_* hold the value set or the delta added and
-- result_type/r_* the value read back, as in the samples table. state is the last
-- state in snake_case, or expired_unconfirmed (no final ack within expires_at plus
-- the grace period); ack_reason is the AckReason of the ack that set it.
CREATE TABLE IF NOT EXISTS "__SCHEMA__"."__P__commands" (
    device_id    text             NOT NULL,
    command_id   bytea            NOT NULL,
    target       text,
    action       text,
    op           text,
    value_type   text,
    v_double     double precision,
    v_int        bigint,
    v_uint       numeric(20, 0),
    v_bool       boolean,
    v_text       text,
    v_bytes      bytea,
    issuer       text,
    reason       text,
    issued_at    timestamptz,
    expires_at   timestamptz,
    state        text             NOT NULL,
    ack_reason   text,
    detail       text,
    result_type  text,
    r_double     double precision,
    r_int        bigint,
    r_uint       numeric(20, 0),
    r_bool       boolean,
    r_text       text,
    r_bytes      bytea,
    received_at  timestamptz,
    delivered_at timestamptz,
    final_at     timestamptz,
    updated_at   timestamptz      NOT NULL,
    PRIMARY KEY (device_id, command_id)
);
-- The expiry sweep reads only open commands.
CREATE INDEX IF NOT EXISTS "__P__commands_open_expiry"
    ON "__SCHEMA__"."__P__commands" (expires_at)
    WHERE state IN ('pending', 'queued', 'delivered', 'validating', 'executing');
