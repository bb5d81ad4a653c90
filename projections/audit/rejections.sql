-- Inbox messages the intake refused (from the MILESTONES_REJECTIONS stream).
CREATE TABLE IF NOT EXISTS audit_rejections (
    position    bigint      PRIMARY KEY,
    inbox_seq   bigint      NOT NULL,
    subject     text        NOT NULL,
    received_at timestamptz NOT NULL,
    code        text        NOT NULL,
    message     text        NOT NULL,
    payload     text
);
