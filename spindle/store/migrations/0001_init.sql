-- Objects: every API object as JSON, scoped by project, ordered by insertion (seq).
CREATE TABLE objects (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,
    project    TEXT    NOT NULL,
    parent     TEXT,
    created_at INTEGER NOT NULL,
    data       TEXT    NOT NULL
);
CREATE INDEX objects_by_parent ON objects (kind, parent, seq);
CREATE INDEX objects_by_project ON objects (kind, project, seq);

-- Each run's stream events, in order; a stream is a reader of this log.
CREATE TABLE events (
    run_id TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    event  TEXT    NOT NULL,
    data   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
