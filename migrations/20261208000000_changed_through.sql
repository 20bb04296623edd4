-- The latest source change time (unix milliseconds) a target has confirmed every
-- change up to: the plan of the read that saw it was confirmed whole. Only changes
-- after it are measured for the propagation latency, so that a first sync of
-- entries changed years ago is not counted as years of delay. NULL: not known yet
-- (a new target, or one from before this column), and nothing is measured.
ALTER TABLE target_state ADD COLUMN changed_through INTEGER;
