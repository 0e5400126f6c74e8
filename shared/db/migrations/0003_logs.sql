-- Logs kept as evidence: per-stream byte counts (seen, kept in blob storage, stored inline),
-- whether output passed the hard cap, and when retention removed a run's logs and results.
ALTER TABLE sandbox_run
    ADD COLUMN log_stats       jsonb,
    ADD COLUMN output_limited  boolean NOT NULL DEFAULT false,
    ADD COLUMN purged_at       timestamptz;

CREATE INDEX sandbox_run_retention_idx ON sandbox_run (finalized_at)
    WHERE finalized_at IS NOT NULL AND purged_at IS NULL;
