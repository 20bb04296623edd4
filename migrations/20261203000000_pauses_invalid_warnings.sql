-- A confirmation whose answer lacked an echo the endpoint declares (drift unchecked).
ALTER TABLE audit ADD COLUMN warning TEXT;

-- A `Retry-After` longer than a run waits. No run sends to the target (endpoint = '')
-- or to that endpoint before `until`; a row whose time has passed is deleted.
CREATE TABLE target_pauses (
    target      TEXT NOT NULL,
    endpoint    TEXT NOT NULL,             -- '' (the whole target) | group_members | update_user
    until       TEXT NOT NULL,             -- RFC 3339 UTC, as the other timestamps
    http_status INTEGER,                   -- the answer that asked for it (429, 503)
    run_id      TEXT NOT NULL,
    PRIMARY KEY (target, endpoint)
) WITHOUT ROWID;

-- Entities whose request cannot be built from the source data (a phone number the
-- API's pattern refuses, a required email missing). Each is reported (audit row,
-- warning) when it first fails or when its reason changes, not on every run; a row is
-- deleted once the source data is fixed.
CREATE TABLE invalid_entities (
    target      TEXT NOT NULL,
    entity_kind TEXT NOT NULL,             -- group | user
    entity_id   TEXT NOT NULL,
    entity_name TEXT NOT NULL,
    reason      TEXT NOT NULL,
    since       TEXT NOT NULL,             -- when this reason was first reported
    run_id      TEXT NOT NULL,             -- the run that reported it
    PRIMARY KEY (target, entity_kind, entity_id)
) WITHOUT ROWID;
