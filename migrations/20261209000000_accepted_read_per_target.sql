-- The read each target last trusted with removals. A source drop let through for one
-- target (`sync --target`, an approval) stays held for the others. The single row of
-- `accepted_read` is the baseline of a target without a row here.
CREATE TABLE target_accepted_read (
    target      TEXT PRIMARY KEY,
    users       INTEGER NOT NULL,
    memberships INTEGER NOT NULL,
    at          TEXT NOT NULL
) WITHOUT ROWID;
