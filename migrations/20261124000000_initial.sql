-- dirsync state: what each target last confirmed, the runs, and the audit log.
-- Timestamps are RFC 3339 UTC text with milliseconds, so they sort as text.

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,          -- UUIDv7: sorts by start time
    command     TEXT NOT NULL,             -- sync | resync
    dry_run     INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,                      -- success | partial | refused | failed; NULL while running or after a crash
    summary     TEXT                       -- JSON: counts per target
);

-- One row per target group the target confirmed. `members` is a JSON array of target
-- user ids, `fingerprint` the hash of the request that was confirmed.
CREATE TABLE snapshot_groups (
    target      TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    members     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (target, id)
) WITHOUT ROWID;

-- One row per target user the target confirmed; `data` is the user as pushed (JSON),
-- kept so that a user who leaves the source can still be disabled.
CREATE TABLE snapshot_users (
    target      TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (target, id)
) WITHOUT ROWID;

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    at          TEXT NOT NULL,
    target      TEXT NOT NULL,
    operation   TEXT NOT NULL,             -- replace_members | update_user | unmapped
    entity_kind TEXT NOT NULL,             -- group | user
    entity_id   TEXT NOT NULL,
    entity_name TEXT NOT NULL,
    outcome     TEXT NOT NULL,             -- success | failed | skipped
    http_status INTEGER,
    attempts    INTEGER NOT NULL,
    summary     TEXT,                      -- JSON: reason, added, removed
    drift       TEXT,                      -- JSON: what the answer shows differently
    error       TEXT
);
CREATE INDEX audit_run ON audit (run_id);
CREATE INDEX audit_target_at ON audit (target, at);
CREATE INDEX audit_entity ON audit (entity_id);
