//! The operator's errors, each with a bounded category used as a metric label.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("session id counter {name}: {message}")]
    IdCounter { name: String, message: String },

    #[error("object has no {0}")]
    MissingField(&'static str),

    /// Leadership lapsed before a write; not a failure of the session's.
    #[error("no longer the leader")]
    NotLeader,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

/// Why a reconciliation failed, in a small fixed set: the errors metric's `category` label,
/// so its series never grow with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    Conflict,
    NotFound,
    Forbidden,
    Rejected,
    Throttled,
    ApiError,
    Connection,
    Finalizer,
    IdCounter,
    InvalidObject,
    /// Leadership lapsed before a write (the reconcile ends; the next leader takes over).
    NotLeader,
}

impl ErrorCategory {
    pub const ALL: [ErrorCategory; 11] = [
        Self::Conflict,
        Self::NotFound,
        Self::Forbidden,
        Self::Rejected,
        Self::Throttled,
        Self::ApiError,
        Self::Connection,
        Self::Finalizer,
        Self::IdCounter,
        Self::InvalidObject,
        Self::NotLeader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Rejected => "rejected",
            Self::Throttled => "throttled",
            Self::ApiError => "api_error",
            Self::Connection => "connection",
            Self::Finalizer => "finalizer",
            Self::IdCounter => "id_counter",
            Self::InvalidObject => "invalid_object",
            Self::NotLeader => "not_leader",
        }
    }

    /// Every label value, for the metric to start at zero.
    pub fn labels() -> [&'static str; 11] {
        Self::ALL.map(Self::as_str)
    }
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(e) => kube_category(e),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => ErrorCategory::Finalizer,
            },
            Error::IdCounter { .. } => ErrorCategory::IdCounter,
            Error::MissingField(_) => ErrorCategory::InvalidObject,
            Error::NotLeader => ErrorCategory::NotLeader,
        }
    }

    /// Leadership lapsed during the reconcile, also when the finalizer helper wraps it.
    pub fn is_not_leader(&self) -> bool {
        self.category() == ErrorCategory::NotLeader
    }

    /// Errors that no retry fixes until the object changes.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.category(),
            ErrorCategory::InvalidObject | ErrorCategory::Rejected
        )
    }
}

fn kube_category(e: &kube::Error) -> ErrorCategory {
    match e {
        kube::Error::Api(status) => match status.code {
            409 => ErrorCategory::Conflict,
            404 => ErrorCategory::NotFound,
            401 | 403 => ErrorCategory::Forbidden,
            400 | 422 => ErrorCategory::Rejected,
            429 => ErrorCategory::Throttled,
            _ => ErrorCategory::ApiError,
        },
        _ => ErrorCategory::Connection,
    }
}
