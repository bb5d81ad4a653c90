-- The notifier's own tables. Not read models: they record side effects (what was sent, when,
-- with what answer), so a rebuild never touches them.
CREATE TABLE IF NOT EXISTS deliveries (
    id              text        PRIMARY KEY,  -- also the Idempotency-Key header
    kind            text        NOT NULL,     -- milestone.achieved | milestone.rescheduled | ...
    project_id      text        NOT NULL,
    milestone_id    text,
    stakeholder     text        NOT NULL,
    url             text        NOT NULL,
    secret          text,                     -- sealed (services/notify/secretbox.py), never clear
    position        bigint,                   -- the event that caused it (none for digests)
    body            bytea       NOT NULL,     -- sent unchanged on every attempt (same signature)
    status          text        NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_project ON deliveries (project_id, created_at);
CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id  text        NOT NULL REFERENCES deliveries (id),
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  double precision NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
-- The last at-risk/late state notified per milestone, so a state is announced once.
CREATE TABLE IF NOT EXISTS notified_health (
    project_id   text NOT NULL,
    milestone_id text NOT NULL,
    health       text NOT NULL,
    due          date NOT NULL,
    PRIMARY KEY (project_id, milestone_id)
);
-- Every digest built: what it said and up to which position, so the next says what changed since.
CREATE TABLE IF NOT EXISTS digests (
    project_id  text        NOT NULL,
    position    bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    PRIMARY KEY (project_id, position)
);
