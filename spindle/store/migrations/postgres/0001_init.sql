-- Objects: every API object as JSON (the json type keeps the text as written: key order,
-- and characters jsonb refuses), scoped by project, ordered by insertion (seq).
CREATE TABLE objects (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT   NOT NULL UNIQUE,
    kind       TEXT   NOT NULL,
    project    TEXT   NOT NULL,
    parent     TEXT,
    created_at BIGINT NOT NULL,
    data       JSON   NOT NULL
);
CREATE INDEX objects_by_parent ON objects (kind, parent, seq);
CREATE INDEX objects_by_project ON objects (kind, project, seq);

-- Each run's stream events, in order, gap-free per run; a stream is a reader of this log.
CREATE TABLE events (
    run_id TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    event  TEXT    NOT NULL,
    data   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
