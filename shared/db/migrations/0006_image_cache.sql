-- The pull cache of each executor host: which adapter images it holds, how big, when last run.
CREATE TABLE image_cache (
    host          text        NOT NULL,
    image_id      text        NOT NULL,
    ref           text        NOT NULL,
    size_bytes    bigint      NOT NULL,
    uses          bigint      NOT NULL DEFAULT 1,
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, image_id)
);
