//! dirsync keeps the users and groups of SaaS admin APIs in step with a directory.
//!
//! A map of the crate, in the order data flows:
//!
//! - [`config`]: the TOML file, read into raw shapes and validated into typed config.
//! - [`source`]: adapters that read a complete [`model::Directory`] (CSV, LDAP).
//! - [`model`]: the normalized directory: users, groups with flattened members.
//! - [`mapping`]: pure; directory + a target's mapping rules → desired state.
//! - [`plan`]: pure; desired state diffed against the target's snapshot → operations.
//! - `safety`: pure; refuses plans that remove more than the limits allow.
//! - `target`: a target described as data (`spec`), requests built and answers
//!   judged purely (`request`), sent over HTTP with retries (`http`), a SCIM
//!   service's own ids (`scim`), and presets.
//! - `template`: minijinja with escaping chosen by the output format.
//! - [`text`]: pure; directory and target text made safe to print or keep.
//! - [`store`]: the SQLite state database: snapshots, runs, audit log.
//! - [`lock`]: one run at a time per state database.
//! - [`sync`]: wires one run together; the only module that sequences I/O.
//! - [`daemon`]: `dirsync run`: schedules, reload, graceful stop, systemd, health
//!   and `metrics`.
//! - [`notify`]: the webhook: a run's events as JSON messages (pure), posted after it.
//! - [`verify`]: `dirsync verify`: groups read back from a target, compared with
//!   the snapshot; drift marked for the next sync to correct.
//! - [`exit`]: the process exit codes.

pub mod config;
pub mod daemon;
pub mod exit;
pub mod hold;
pub mod init;
pub mod lock;
pub mod mapping;
pub(crate) mod metrics;
pub mod model;
pub mod notify;
pub mod plan;
pub(crate) mod safety;
pub mod source;
pub mod store;
pub mod sync;
pub(crate) mod target;
pub(crate) mod template;
pub mod text;
pub mod verify;
