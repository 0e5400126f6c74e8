-- Result webhooks and GitHub commit statuses (issue 9): what a run asked to be told, and a
-- delivery per state change and target, retried from Postgres with every attempt kept.
ALTER TABLE sandbox_run
    ADD COLUMN callback  jsonb,
    ADD COLUMN github    jsonb;

CREATE TABLE webhook_delivery (
    id               uuid        PRIMARY KEY,
    -- Orders a run's deliveries of one kind: a later one waits until the earlier is settled,
    -- so a receiver (and GitHub's status list) never sees "running" after "succeeded".
    seq              bigserial   NOT NULL UNIQUE,
    run_id           uuid        NOT NULL,
    event_id         uuid,
    kind             text        NOT NULL CHECK (kind IN ('webhook', 'github_status')),
    event_status     text        NOT NULL,
    target           jsonb       NOT NULL,
    payload          jsonb       NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'succeeded', 'failed', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    last_status      integer,
    last_error       text,
    redelivery_of    uuid        REFERENCES webhook_delivery (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CONSTRAINT webhook_delivery_succeeded_iff_delivered CHECK (
        (state = 'succeeded') = (delivered_at IS NOT NULL))
);

-- The relay schedules each event once per kind, even if it sees the event twice.
CREATE UNIQUE INDEX webhook_delivery_once_per_event
    ON webhook_delivery (event_id, kind) WHERE redelivery_of IS NULL;
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_delivery_run_idx ON webhook_delivery (run_id, kind, seq);

CREATE TABLE webhook_attempt (
    delivery_id  uuid        NOT NULL REFERENCES webhook_delivery (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  integer     NOT NULL,
    status_code  integer,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);
