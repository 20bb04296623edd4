//! Process exit codes. Scripts and systemd tell outcomes apart by these alone.

/// Everything planned was confirmed by the targets.
pub const SUCCESS: u8 = 0;
/// An unexpected internal error (a bug, or the state database failing).
pub const FAILURE: u8 = 1;
/// Command-line usage error (from the argument parser).
pub const USAGE: u8 = 2;
/// Some operations failed or were left for the next run; the rest were confirmed.
/// Also `dirsync verify`: a target's groups differ from what dirsync confirmed, a
/// group could not be read, or a target has no way to read its groups back.
pub const PARTIAL: u8 = 3;
/// A safety limit held removals back (the rest of the plan was pushed), or refused a
/// target's plan (an empty source; nothing was pushed to that target).
pub const REFUSED: u8 = 4;
/// The config file is missing or invalid.
pub const CONFIG: u8 = 5;
/// The source could not be read completely; nothing was pushed.
pub const SOURCE: u8 = 6;
/// Another sync holds the lock on the state database.
pub const LOCKED: u8 = 7;
/// A second interrupt or stop signal ended the command at once (128 + SIGINT, as a
/// shell reports it): operations under way were not recorded.
pub const INTERRUPTED: u8 = 130;

/// The code a run's outcome ends with.
pub fn of_outcome(outcome: crate::sync::Outcome) -> u8 {
    use crate::sync::Outcome;
    match outcome {
        Outcome::Success => SUCCESS,
        Outcome::Partial => PARTIAL,
        Outcome::Refused => REFUSED,
    }
}

/// The code a run that could not go ahead ends with.
pub fn of_error(e: &crate::sync::SyncError) -> u8 {
    use crate::lock::LockError;
    use crate::sync::SyncError;
    match e {
        SyncError::Lock(LockError::Held { .. }) => LOCKED,
        SyncError::Source(_) => SOURCE,
        SyncError::Mapping { .. }
        | SyncError::UnknownTarget(_)
        | SyncError::Target(_)
        | SyncError::HeldForUnknownTarget { .. } => CONFIG,
        SyncError::UnknownHeld(_) | SyncError::NotHeld { .. } | SyncError::PlanFile { .. } => USAGE,
        SyncError::StalePlan { .. } => REFUSED,
        SyncError::Lock(_) | SyncError::Store(_) | SyncError::Output(_) => FAILURE,
    }
}
