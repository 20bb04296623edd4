-- For a target whose group request gives each member's details, the details of the
-- members as the group was last confirmed (a JSON object: target user id → user), so
-- that a member the removal policy keeps after they left the source can still be
-- listed. NULL when the target's request lists ids only. `member_users_at` is when
-- the target confirmed them: of two groups' details of one member, the later are
-- what the source said last.
ALTER TABLE snapshot_groups ADD COLUMN member_users TEXT;
ALTER TABLE snapshot_groups ADD COLUMN member_users_at TEXT;
