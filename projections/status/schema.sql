-- One row per milestone: its current status. Rebuilt from the event log at will.
CREATE TABLE IF NOT EXISTS ms_status (
    project_id    text        NOT NULL,
    milestone_id  text        NOT NULL,
    name          text        NOT NULL,
    kind          text        NOT NULL,
    phase         text,
    ord           integer     NOT NULL,
    due           date        NOT NULL,
    first_due     date        NOT NULL,
    achieved_at   timestamptz,
    cancelled     boolean     NOT NULL,
    tasks         jsonb       NOT NULL,
    tasks_total   integer     NOT NULL,
    tasks_done    integer     NOT NULL,
    progress      integer     NOT NULL,
    health        text        NOT NULL,
    health_reasons jsonb      NOT NULL,
    reschedules   integer     NOT NULL,
    last_position bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (project_id, milestone_id)
);
CREATE INDEX IF NOT EXISTS ms_status_milestone ON ms_status (milestone_id);
CREATE INDEX IF NOT EXISTS ms_status_project_order ON ms_status (project_id, ord, milestone_id);
CREATE INDEX IF NOT EXISTS ms_status_project_due ON ms_status (project_id, due, milestone_id);
