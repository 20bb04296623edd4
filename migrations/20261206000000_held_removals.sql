-- Removals and disables held back by a safety limit, waiting for an operator
-- (`dirsync held`, `approve`, `discard`). The same removals held run after run are
-- one row (same target and fingerprint); a target whose next plan holds other
-- removals gets a new row and the old one is marked `replaced`.
CREATE TABLE held_changes (
    id                  TEXT PRIMARY KEY,       -- short, for typing: `dirsync approve ID`
    target              TEXT NOT NULL,
    fingerprint         TEXT NOT NULL,          -- SHA-256 of what is held
    status              TEXT NOT NULL,          -- held | approved | discarded | replaced | cleared
    reasons             TEXT NOT NULL,          -- JSON list: which limits held them
    removed_memberships INTEGER NOT NULL,
    disabled_users      INTEGER NOT NULL,
    detail              TEXT NOT NULL,          -- JSON: {groups: {id: {name, members}}, users: {id: name}}
    first_held_at       TEXT NOT NULL,
    last_held_at        TEXT NOT NULL,
    last_run_id         TEXT NOT NULL,
    decided_by          TEXT,                   -- who approved or discarded it
    decided_at          TEXT
);
CREATE INDEX held_changes_target ON held_changes (target, status);

-- The size of the last source read trusted with removals, for
-- `safety.max_source_drop_percent`: a read that shrank more than that holds
-- removals and does not move this row.
CREATE TABLE accepted_read (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    users       INTEGER NOT NULL,
    memberships INTEGER NOT NULL,
    at          TEXT NOT NULL
);

-- With `safety.removal_delay`: each member the source no longer has in a target
-- group, since when, and when the removal is due. A member who comes back loses the
-- row; a removal confirmed by the target no longer shows up as absent.
CREATE TABLE absent_members (
    target      TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    member      TEXT NOT NULL,
    since       TEXT NOT NULL,               -- RFC 3339 UTC
    due         TEXT NOT NULL,
    PRIMARY KEY (target, group_id, member)
) WITHOUT ROWID;
