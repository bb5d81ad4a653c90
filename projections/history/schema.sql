-- Every schedule-relevant change of a milestone; read in time order (occurred_at, position).
CREATE TABLE IF NOT EXISTS ms_history (
    position     bigint      PRIMARY KEY,
    project_id   text        NOT NULL,
    milestone_id text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    type         text        NOT NULL,
    old_due      date,
    new_due      date,
    reason       text,
    actor        text,
    source       text        NOT NULL
);
