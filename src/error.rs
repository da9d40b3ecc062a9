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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl Error {
    /// Every value `category` can return.
    pub const CATEGORIES: [&'static str; 10] = [
        "conflict",
        "not_found",
        "forbidden",
        "rejected",
        "throttled",
        "api_error",
        "connection",
        "finalizer",
        "id_counter",
        "invalid_object",
    ];

    /// A small fixed set of labels, so the errors metric never grows with the input.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(e) => kube_category(e),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "finalizer",
            },
            Error::IdCounter { .. } => "id_counter",
            Error::MissingField(_) => "invalid_object",
        }
    }

    /// Errors that no retry fixes until the object changes.
    pub fn is_permanent(&self) -> bool {
        self.category() == "invalid_object" || self.category() == "rejected"
    }
}

fn kube_category(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(status) => match status.code {
            409 => "conflict",
            404 => "not_found",
            401 | 403 => "forbidden",
            400 | 422 => "rejected",
            429 => "throttled",
            _ => "api_error",
        },
        _ => "connection",
    }
}
