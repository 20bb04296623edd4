//! One sync at a time per state database: an exclusive lock on `<state_db>.lock`.
//!
//! The kernel drops the lock when the process exits, however it exits, so a crashed
//! run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Held while a run works; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another sync is running on this state database (lock {path} is held); wait for it, or pass --wait"
    )]
    Held { path: PathBuf },
    #[error("cannot open lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl RunLock {
    /// Takes the lock, or fails at once with `LockError::Held`, or (with `wait`) blocks
    /// until the other run is done.
    pub async fn acquire(state_db: &Path, wait: bool) -> Result<RunLock, LockError> {
        let mut name = state_db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if wait => {
                tracing::info!(lock = %path.display(), "Another sync is running; waiting for it to finish.");
                let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
                let file = locked.map_err(|e| io(std::io::Error::other(e)))?.map_err(io)?;
                Ok(RunLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held { path }),
            Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
        }
    }
}
