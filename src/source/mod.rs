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
            match tokio::spawn(async move { ldap::read(&c).await }).await {
                Ok(read) => Ok(read?),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(ldap::LdapError::Connect {
                    url,
                    message: format!("the read was cancelled: {e}"),
                }
                .into()),
            }
        }
    }
}
