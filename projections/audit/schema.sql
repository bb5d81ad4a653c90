-- Every event ever appended, with who, where from, when, why (correlation/causation) and the payload.
CREATE TABLE IF NOT EXISTS audit_events (
    position       bigint      PRIMARY KEY,
    subject        text        NOT NULL,
    project_id     text        NOT NULL,
    milestone_id   text,
    type           text        NOT NULL,
    event_id       text        NOT NULL,
    actor          text,
    source         text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    correlation_id text        NOT NULL,
    causation_id   text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL
);
-- who sent it, as the transport authenticated it (events stored before the trust boundary: NULL)
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS principal text;
-- the CloudEvent attributes without a column: traceparent, tracestate, dataschema, the
-- publisher's subject (sourcesubject) and its extension attributes (NULL: none, or stored before)
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS attributes jsonb;
