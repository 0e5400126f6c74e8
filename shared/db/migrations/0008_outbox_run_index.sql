-- Retention deletes a purged run's published events, and `sandbox-runner` shows a run's events:
-- both look rows up by run, which scanned the whole outbox (it only grew: nothing deleted rows).
CREATE INDEX outbox_run_idx ON outbox (run_id);
