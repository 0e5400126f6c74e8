-- Egress (issue 6): the resource policy may let a persona/method reach the allow-listed hosts
-- through a per-run proxy, and a run records what that proxy refused.

-- NULL inherits, like the limits; a row may now set only this switch.
ALTER TABLE resource_policy ADD COLUMN egress boolean;
ALTER TABLE resource_policy DROP CONSTRAINT resource_policy_sets_a_limit;
ALTER TABLE resource_policy ADD CONSTRAINT resource_policy_sets_a_limit
    CHECK (num_nonnulls(cpu, memory_mb, timeout_s, log_cap_mb, egress) > 0);

-- NULL for a run without network. Otherwise, redacted:
-- {"denied": [{"host", "port", "method", "time", "reason"?}, ...first 100],
--  "deniedTotal", "allowedTotal", "proxyLogMissing"?}
ALTER TABLE sandbox_run ADD COLUMN egress jsonb;
