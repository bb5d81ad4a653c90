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
