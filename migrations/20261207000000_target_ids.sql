-- The ids a target assigns to the users and groups dirsync maps (a SCIM service's
-- `id`), by the key dirsync maps them to: the value the target is searched by
-- (`userName`, `displayName` or `externalId`). A 404 on a kept id deletes its row and
-- the entity is searched for again.
CREATE TABLE target_ids (
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,   -- user | group
    key        TEXT NOT NULL,
    target_id  TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (target, kind, key)
) WITHOUT ROWID;
