//! Sources: where the directory is read from. Each adapter returns a complete
//! `Directory` or an error; a partial read is never returned, so a failed read can
//! never look like "these users left".

pub mod csv;
pub mod ldap;

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
        SourceConfig::Csv(c) => {
            let c = (**c).clone();
            // Parsing 100k rows is CPU work; keep it off the async workers.
            let dir = tokio::task::spawn_blocking(move || csv::read(&c))
                .await
                .map_err(|e| csv::CsvError::internal(e.to_string()))??;
            Ok(dir)
        }
        SourceConfig::Ldap(c) => {
            // On a worker thread, the task that waits for the socket is the one the
            // I/O driver wakes: no hand-off to the thread that called `block_on` for
            // each of the ~10,000 waits of a large read (half the context switches).
            let (c, url) = ((**c).clone(), c.url.clone());
            let read = joined(tokio::spawn(async move { ldap::read(&c).await }).await).map_err(|e| {
                ldap::LdapError::Connect {
                    url,
                    message: format!("the read was cancelled: {e}"),
                }
            })?;
            Ok(read?)
        }
    }
}

/// A spawned task's result. Its panic goes on unwinding here; `Err` is left only
/// for a task the runtime dropped while shutting down.
pub(crate) fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, String> {
    result.map_err(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => e.to_string(),
    })
}
