//! The session's pairing data: whatsapp-rust's SQLite store in the auth directory, held by
//! one worker at a time.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The SQLite file in the auth directory; SQLite adds its `-wal`, `-shm` and `-journal`
/// files beside it.
const DB_FILE: &str = "whatsapp.db";
const LOCK_FILE: &str = ".whatsapp-worker.lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the auth directory {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("another worker holds the store in {0}: one client per store, never two")]
    Held(PathBuf),
}

/// The auth directory, locked for this process: two clients on one store corrupt it.
pub struct AuthStore {
    dir: PathBuf,
    _lock: File,
}

impl AuthStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Held(dir.to_owned())),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The SQLite database the client opens.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// Deletes the pairing data (after a logout, so the next start pairs a new device).
    /// Only the store's own files: the directory may be a volume with other contents.
    pub fn wipe(&self) -> std::io::Result<()> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = self.dir.join(format!("{DB_FILE}{suffix}"));
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "deleted pairing data"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_store() {
        let dir = tempfile::tempdir().unwrap();
        let first = AuthStore::open(dir.path()).unwrap();
        assert!(matches!(AuthStore::open(dir.path()), Err(StoreError::Held(_))));
        drop(first);
        AuthStore::open(dir.path()).expect("free again once the first is gone");
    }

    #[test]
    fn wipe_deletes_the_store_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        for name in ["whatsapp.db", "whatsapp.db-wal", "whatsapp.db-shm", "keep.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        store.wipe().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".whatsapp-worker.lock", "keep.txt"]);
        store.wipe().expect("wiping an empty store is fine");
    }
}
