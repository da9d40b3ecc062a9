//! Bearer API keys: several at once (rotation), from a file that is re-read when it changes
//! or from the environment. Keys are kept only as SHA-256 digests and compared in constant
//! time; neither a key nor a presented token is ever logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

type KeyDigest = [u8; 32];

/// How often the key file is checked for changes (a mounted Secret changes in place).
const RELOAD_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no API key configured: give --api-key-file (one key per line) or API_KEYS (comma-separated); the session API never runs open"
    )]
    None,
    #[error("cannot read API key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// The accepted keys, swapped whole on reload.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Arc<RwLock<Arc<Vec<KeyDigest>>>>,
}

/// Keys of a file: one per line; blank lines and lines starting with '#' are skipped.
pub fn parse_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn read_keys(path: &Path) -> Result<Vec<String>, KeyError> {
    std::fs::read_to_string(path)
        .map(|t| parse_keys(&t))
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
}

impl ApiKeys {
    pub fn from_keys<S: AsRef<str>>(keys: &[S]) -> Result<Self, KeyError> {
        let api_keys = Self::default();
        api_keys.replace(keys)?;
        Ok(api_keys)
    }

    /// Keys from `file` when given, else from `env` (comma-separated). Refuses to start open.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Self, KeyError> {
        match file {
            Some(path) => Self::from_keys(&read_keys(path)?),
            None => {
                let keys: Vec<&str> = env
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .collect();
                Self::from_keys(&keys)
            }
        }
    }

    fn replace<S: AsRef<str>>(&self, keys: &[S]) -> Result<(), KeyError> {
        if keys.is_empty() {
            return Err(KeyError::None);
        }
        let digests = keys
            .iter()
            .map(|k| Sha256::digest(k.as_ref().as_bytes()).into())
            .collect();
        *self.digests.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(digests);
        Ok(())
    }

    /// Whether `token` is one of the keys. Every key is compared, in constant time, so
    /// neither timing nor position tells anything about them.
    pub fn verify(&self, token: &str) -> bool {
        let presented: KeyDigest = Sha256::digest(token.as_bytes()).into();
        let digests = self.digests.read().unwrap_or_else(|e| e.into_inner()).clone();
        digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&presented))
            .into()
    }

    /// Re-reads `path` whenever its modification time or size changes, until `stop`. A file
    /// that became unreadable or empty keeps the previous keys, so a botched rotation does
    /// not lock every client out.
    pub async fn watch_file(self, path: PathBuf, stop: CancellationToken) {
        let stamp = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut last = stamp(&path);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match read_keys(&path).and_then(|keys| self.replace(&keys).map(|_| keys.len())) {
                Ok(n) => info!(path = %path.display(), keys = n, "API keys reloaded"),
                Err(e) => warn!(error = %e, "API keys not reloaded; the previous keys stay in force"),
            }
        }
    }
}

/// Why a request is refused, each with the message the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Scheme,
    Invalid,
}

impl Denied {
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "Missing API key: send the header 'Authorization: Bearer <API key>'",
            Denied::Scheme => "Malformed Authorization header: expected 'Bearer <API key>'",
            Denied::Invalid => "Invalid API key",
        }
    }
}

/// Checks an `Authorization` header value. The scheme name is case-insensitive (RFC 9110).
pub fn check(keys: &ApiKeys, header: Option<&[u8]>) -> Result<(), Denied> {
    let raw = header.ok_or(Denied::Missing)?;
    let value = std::str::from_utf8(raw).map_err(|_| Denied::Scheme)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(Denied::Scheme)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Denied::Scheme);
    }
    if keys.verify(token) {
        Ok(())
    } else {
        Err(Denied::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_is_accepted_and_nothing_else() {
        let keys = ApiKeys::from_keys(&["old-key", "new-key"]).unwrap();
        assert!(keys.verify("old-key"));
        assert!(keys.verify("new-key"));
        assert!(!keys.verify("new-ke"));
        assert!(!keys.verify(""));
        assert!(!keys.verify("old-key "));
    }

    #[test]
    fn no_key_refuses_to_start() {
        assert!(matches!(ApiKeys::load(None, None), Err(KeyError::None)));
        assert!(matches!(ApiKeys::load(None, Some(" , ")), Err(KeyError::None)));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "# only a comment\n\n").unwrap();
        assert!(matches!(
            ApiKeys::load(Some(file.path()), None),
            Err(KeyError::None)
        ));
        assert!(matches!(
            ApiKeys::load(Some(Path::new("/nonexistent/keys")), None),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn key_file_lines() {
        assert_eq!(parse_keys("a\n  b  \n\n# c\nd\r\n"), vec!["a", "b", "d"]);
    }

    #[test]
    fn header_forms() {
        let keys = ApiKeys::from_keys(&["k1"]).unwrap();
        assert_eq!(check(&keys, None), Err(Denied::Missing));
        assert_eq!(check(&keys, Some(b"k1")), Err(Denied::Scheme));
        assert_eq!(check(&keys, Some(b"Basic k1")), Err(Denied::Scheme));
        assert_eq!(check(&keys, Some(b"Bearer ")), Err(Denied::Scheme));
        assert_eq!(check(&keys, Some(b"Bearer \xff")), Err(Denied::Scheme));
        assert_eq!(check(&keys, Some(b"Bearer k2")), Err(Denied::Invalid));
        assert_eq!(check(&keys, Some(b"Bearer k1")), Ok(()));
        assert_eq!(check(&keys, Some(b"bearer k1")), Ok(()));
    }
}
