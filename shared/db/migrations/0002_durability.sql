-- Durability without Temporal: takeovers counted apart from attempts, a deadline per phase,
-- raw line counters so a re-attached executor neither loses nor repeats lines, idempotent submits.
ALTER TABLE sandbox_run
    ADD COLUMN takeovers    integer     NOT NULL DEFAULT 0,
    ADD COLUMN deadline_at  timestamptz,
    ADD COLUMN raw_lines    jsonb       NOT NULL DEFAULT '{"stdout": 0, "stderr": 0}',
    ADD COLUMN redactions   jsonb,
    ADD COLUMN cancel_requested_by text;

CREATE INDEX sandbox_run_deadline_idx ON sandbox_run (deadline_at)
    WHERE status IN ('queued', 'provisioning', 'ready', 'running', 'finalizing');

CREATE TABLE idempotency_key (
    caller        text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    run_id        uuid        NOT NULL REFERENCES sandbox_run (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (caller, key)
);

-- One completion event per run, enforced by the database, not only by the code.
CREATE UNIQUE INDEX outbox_one_terminal_event_per_run ON outbox (run_id)
    WHERE kind = 'sandbox.run.state_changed'
      AND payload->>'status' IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'error');
