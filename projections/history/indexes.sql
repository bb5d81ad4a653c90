-- The history tables' secondary indexes (``index_sql``): a rebuild creates them once its tables
-- are loaded, which is about twice as fast as keeping them up to date row by row.
CREATE INDEX IF NOT EXISTS ms_history_milestone ON ms_history (milestone_id, position);
CREATE INDEX IF NOT EXISTS ms_history_project ON ms_history (project_id, position);
CREATE INDEX IF NOT EXISTS ms_history_milestone_time ON ms_history (milestone_id, occurred_at, position);
