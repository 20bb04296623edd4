//! Sources: where the directory is read from. Each adapter returns a complete
//! `Directory` or an error; a partial read is never returned, so a failed read can
//! never look like "these users left".

pub(crate) mod csv;
pub mod ldap;
pub(crate) mod token;

use crate::config::SourceConfig;
use crate::model::Directory;

/// The directory could not be read completely. Nothing is planned or pushed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Csv(#[from] csv::CsvError),
    #[error(transparent)]
    Ldap(#[from] ldap::LdapError),
}

/// Reads the whole directory from the configured source.
pub async fn read(config: &SourceConfig) -> Result<Directory, SourceError> {
    match config {
        SourceConfig::Csv(c) => Ok(read_csv(c).await?.0),
        SourceConfig::Ldap(c) => {
            // On a runtime worker, beside ldap3's connection task, rather than on the
            // thread that called `block_on`.
            let (c, url) = ((**c).clone(), c.url.clone());
            let read = tokio::spawn(async move { ldap::read(&c).await })
                .await
                .map_err(|e| ldap::LdapError::Interrupted {
                    url,
                    how: interrupted(e),
                })?;
            Ok(read?)
        }
    }
}

/// Reads the CSV files, with the SHA-256 of each as it was parsed.
pub(crate) async fn read_csv(c: &csv::CsvConfig) -> Result<(Directory, Vec<String>), SourceError> {
    let c = c.clone();
    // Parsing 100k rows is CPU work; keep it off the async workers.
    let read = tokio::task::spawn_blocking(move || {
        let (mut dir, parsed) = csv::read(&c)?;
        stamp_csv(&mut dir, &c);
        Ok::<_, csv::CsvError>((dir, parsed))
    })
    .await
    .map_err(|e| csv::CsvError::internal(e.to_string()))??;
    Ok(read)
}

/// A CSV file has no change time per row: every user changed when the users file
/// did, every group when the groups file (or the membership file) did. A file whose
/// mtime cannot be read leaves its entries without one.
fn stamp_csv(dir: &mut Directory, c: &csv::CsvConfig) {
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let users = mtime(&c.users);
    let groups = mtime(&c.groups).max(c.memberships.as_deref().and_then(mtime));
    dir.users.values_mut().for_each(|u| u.changed_at = users);
    dir.groups.values_mut().for_each(|g| g.changed_at = groups);
}

/// The source's token as it is now, for kinds that have one (CSV); `None` for a kind
/// whose reads are always full.
pub(crate) async fn token(config: &SourceConfig) -> Result<Option<token::Token>, SourceError> {
    match config {
        SourceConfig::Csv(c) => {
            let c = (**c).clone();
            // Hashing the files is blocking I/O and CPU work, like parsing them.
            let t = tokio::task::spawn_blocking(move || token::csv(&c))
                .await
                .map_err(|e| csv::CsvError::internal(e.to_string()))??;
            Ok(Some(t))
        }
        SourceConfig::Ldap(_) => Ok(None),
    }
}

/// How a spawned task ended without a result.
pub(crate) fn interrupted(e: tokio::task::JoinError) -> ldap::Interrupted {
    match e.try_into_panic() {
        Ok(panic) => ldap::Interrupted::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned()),
        ),
        Err(_) => ldap::Interrupted::Cancelled,
    }
}
