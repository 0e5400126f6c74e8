-- Runs, their log lines and the outbox. Postgres is the source of truth; the broker only rings.
CREATE TABLE sandbox_run (
    id                 uuid PRIMARY KEY,
    persona_id         uuid        NOT NULL,
    method_id          text        NOT NULL,
    adapter_image      text        NOT NULL,
    input              jsonb       NOT NULL,
    dry_run            boolean     NOT NULL DEFAULT false,
    requested_resources jsonb,
    status             text        NOT NULL DEFAULT 'queued',
    status_reason      text,
    attempt            integer     NOT NULL DEFAULT 0,
    lease_owner        text,
    heartbeat_at       timestamptz,
    resources          jsonb,
    backend            text,
    image_digest       text,
    plan               jsonb,
    exit_code          integer,
    oom_killed         boolean,
    wall_timed_out     boolean,
    platform_error     text,
    cpu_seconds        double precision,
    peak_memory_bytes  bigint,
    evaluation_raw     text,
    evaluation         jsonb,
    log_lines          integer     NOT NULL DEFAULT 0,
    log_bytes          bigint      NOT NULL DEFAULT 0,
    logs_truncated     boolean     NOT NULL DEFAULT false,
    logs_preview       jsonb,
    result_location    text,
    queued_at          timestamptz NOT NULL DEFAULT now(),
    provisioned_at     timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz,
    finalized_at       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sandbox_run_status_valid CHECK (status IN (
        'queued', 'provisioning', 'ready', 'running', 'finalizing',
        'succeeded', 'failed', 'timed_out', 'cancelled', 'error')),
    -- A run is terminal exactly when it has been finalized.
    CONSTRAINT sandbox_run_terminal_iff_finalized CHECK (
        (status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'error'))
        = (finalized_at IS NOT NULL)),
    CONSTRAINT sandbox_run_attempt_nonnegative CHECK (attempt >= 0)
);

CREATE INDEX sandbox_run_active_idx ON sandbox_run (status, updated_at)
    WHERE status IN ('queued', 'provisioning', 'ready', 'running', 'finalizing');

CREATE TABLE sandbox_run_log (
    run_id   uuid        NOT NULL REFERENCES sandbox_run (id) ON DELETE CASCADE,
    seq      integer     NOT NULL,
    attempt  integer     NOT NULL,
    stream   text        NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    ts       timestamptz NOT NULL,
    line     text        NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    run_id      uuid        NOT NULL,
    kind        text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);

CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
