//! Targets: the admin APIs dirsync pushes to.
//!
//! `spec` describes a target as data, `request` builds requests and judges answers
//! (pure), `http` sends them, `read` reads a group's members back (`dirsync verify`),
//! `presets` holds the built-in specs for the seed APIs as TOML in the same shape an
//! operator writes.

pub mod http;
pub mod pace;
pub mod presets;
mod read;
pub mod request;
mod scim;
pub mod spec;

pub use http::{HttpTarget, PushOutcome, TargetError};
pub(crate) use read::ReadError;
