-- Resource policy in Postgres (issue 6): the defaults and per method / persona+method overrides
-- that admins manage over the API and the CLI. The TOML file (SANDBOX_POLICY_FILE) stays
-- underneath as the seed: a row overrides the file's values for the same scope, key by key.
CREATE TABLE resource_policy (
    id          bigserial        PRIMARY KEY,
    persona_id  uuid,
    -- A method id or a glob such as "test.*"; NULL only on the defaults row.
    method      text,
    cpu         double precision CHECK (cpu > 0),
    memory_mb   integer          CHECK (memory_mb > 0),
    timeout_s   integer          CHECK (timeout_s > 0),
    log_cap_mb  integer          CHECK (log_cap_mb > 0),
    updated_by  text             NOT NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT resource_policy_persona_needs_method CHECK (persona_id IS NULL OR method IS NOT NULL),
    CONSTRAINT resource_policy_sets_a_limit
        CHECK (num_nonnulls(cpu, memory_mb, timeout_s, log_cap_mb) > 0)
);

-- One row per scope: the defaults, a method, or a persona and a method.
CREATE UNIQUE INDEX resource_policy_scope ON resource_policy (
    coalesce(persona_id, '00000000-0000-0000-0000-000000000000'::uuid), coalesce(method, ''));
