-- What the source looked like when it was last read, so that a run can tell an
-- unchanged source from a changed one without parsing or mapping it. One row: the
-- configured source.
CREATE TABLE source_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    kind          TEXT NOT NULL,            -- csv | ldap
    config_hash   TEXT NOT NULL,            -- SHA-256 of the parsed [source] section
    token         TEXT,                     -- JSON, per kind (CSV: each file's path, size, mtime, SHA-256); NULL: next read is full
    token_at      TEXT NOT NULL,            -- when the token was written, RFC 3339 UTC
    generation    INTEGER NOT NULL,         -- moves whenever what was read changed
    users         INTEGER NOT NULL,         -- counts as last read, for the run report
    groups        INTEGER NOT NULL,
    last_mode     TEXT NOT NULL,            -- full | unchanged (later: incremental)
    last_reason   TEXT NOT NULL,            -- why the read was in that mode
    last_read_at  TEXT NOT NULL,
    last_full_at  TEXT                      -- the last read that parsed everything
);

-- Per target: whether everything its last plan held was confirmed (`clean`), for
-- which source generation and which target config. A clean target whose source
-- generation and config hash are unchanged has nothing to plan.
CREATE TABLE target_state (
    target        TEXT PRIMARY KEY,
    generation    INTEGER NOT NULL,
    config_hash   TEXT NOT NULL,
    clean         INTEGER NOT NULL,         -- 0 | 1
    at            TEXT NOT NULL
) WITHOUT ROWID;
