-- The status tables' secondary indexes (``index_sql``): a rebuild creates them once its tables
-- are loaded, which is about twice as fast as keeping them up to date row by row.
CREATE INDEX IF NOT EXISTS ms_status_milestone ON ms_status (milestone_id);
CREATE INDEX IF NOT EXISTS ms_status_reports_project ON ms_status_reports (project_id, position);
