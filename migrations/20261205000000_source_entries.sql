-- The entries of an LDAP source's user and group searches as last read, so that a
-- content synchronisation refresh, which names only what changed, can be applied
-- to them and the directory built again without reading every entry.
CREATE TABLE source_entries (
    kind          TEXT NOT NULL,            -- user | group
    id            TEXT NOT NULL,            -- entryUUID
    dn            TEXT NOT NULL,
    attrs         TEXT NOT NULL,            -- JSON: [[attribute, [value, …]], …]; a value is a string, or {"b64": …} when not UTF-8
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

-- Why the next read must be full (a refresh that failed); NULL otherwise. Written
-- outside the transaction of a read, which a failed read never commits.
ALTER TABLE source_state ADD COLUMN force_full TEXT;
