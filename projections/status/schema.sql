-- One row per milestone: the facts its health is judged from (services.domain.health judges them
-- against the clock at query time). Rebuilt from the event log at will.
CREATE TABLE IF NOT EXISTS ms_status (
    project_id    text        NOT NULL,
    milestone_id  text        NOT NULL,
    name          text        NOT NULL,
    kind          text        NOT NULL,
    phase         text,
    ord           integer     NOT NULL,
    success_criteria text,
    planned_on    date        NOT NULL,
    work_start    date,
    due           date        NOT NULL,
    first_due     date        NOT NULL,
    achieved_at   timestamptz,
    cancelled     boolean     NOT NULL,
    missed        boolean     NOT NULL,
    tasks         jsonb       NOT NULL,
    task_dues     jsonb       NOT NULL,
    tasks_total   integer     NOT NULL,
    tasks_done    integer     NOT NULL,
    progress      integer     NOT NULL,
    tasks_done_on jsonb       NOT NULL,
    predecessors  jsonb       NOT NULL,
    violations    jsonb       NOT NULL,
    last_report   jsonb,
    sign_off      jsonb,  -- a decision gate's approvers and sign-off (NULL: no gate)
    reschedules   integer     NOT NULL,
    last_position bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (project_id, milestone_id)
);

-- Every StatusReported: a person's health + note, for the project or one milestone. Kept.
CREATE TABLE IF NOT EXISTS ms_status_reports (
    position      bigint      PRIMARY KEY,
    project_id    text        NOT NULL,
    milestone_id  text,
    reported_at   timestamptz NOT NULL,
    actor         text,
    health        text        NOT NULL,
    note          text        NOT NULL
);

-- One row per project: what it is for.
CREATE TABLE IF NOT EXISTS ms_projects (
    project_id        text        PRIMARY KEY,
    name              text        NOT NULL,
    goals             jsonb       NOT NULL,
    dependency_policy text        NOT NULL,
    target            date,  -- ProjectTargetSet: the finish the critical path measures against
    created_at        timestamptz NOT NULL,
    position          bigint      NOT NULL
);

-- Who wants to hear about a project (milestone_id NULL) or one milestone, and where.
CREATE TABLE IF NOT EXISTS ms_subscriptions (
    project_id    text        NOT NULL,
    scope         text        NOT NULL,  -- the milestone id, or '' for the whole project
    milestone_id  text,
    stakeholder   text        NOT NULL,
    url           text        NOT NULL,
    secret        text,
    position      bigint      NOT NULL,
    subscribed_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, scope, stakeholder, url)
);
-- the webhook body's format (events.project.PayloadFormat); NULL: subscribed before formats
-- existed, which is the legacy body, so an existing database needs no rebuild
ALTER TABLE ms_subscriptions ADD COLUMN IF NOT EXISTS payload text;
