//! Who may read `/metrics`. Its series name every session (namespace, sessionId, which is often
//! a phone number, status), what the bearer-protected API guards, so in a cluster it is served
//! only to callers the cluster itself vouches for: the bearer token goes through a TokenReview,
//! the user it names through a SubjectAccessReview for `get` on the non-resource URL `/metrics`,
//! as controller-runtime's secure metrics and kube-rbac-proxy do. Answers are cached by the
//! token's hash, so a scrape every few seconds costs the apiserver two requests a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use super::envelope::failure;
use crate::telemetry::operator_metrics::Metrics;

/// How long an answer is reused: a revoked grant or token stops working within this.
const ALLOWED_FOR: Duration = Duration::from_secs(60);
/// Refusals are kept shorter, so a grant just made works soon.
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// Distinct tokens remembered; past it the cache starts over (a flood of made-up tokens cannot
/// grow it).
const CACHE_CAP: usize = 1024;

/// How `/metrics` is guarded.
#[derive(Clone)]
pub enum MetricsAuth {
    /// Open to anyone who reaches the port (the local demo, or a network policy in front).
    Open,
    /// A Kubernetes token allowed to `get` `/metrics`.
    Kubernetes(Arc<Reviewer>),
}

/// The reviews and the answers kept.
pub struct Reviewer {
    client: kube::Client,
    metrics: Arc<Metrics>,
    answers: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Allowed,
    /// The apiserver does not know the token.
    Unknown,
    /// The token names this user, who may not get /metrics.
    Forbidden(String),
}

impl MetricsAuth {
    pub fn kubernetes(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        Self::Kubernetes(Arc::new(Reviewer {
            client,
            metrics,
            answers: Mutex::default(),
        }))
    }

    /// `Ok` when the request may read the metrics, else the envelope that says why.
    pub(super) async fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Self::Kubernetes(reviewer) = self else {
            return Ok(());
        };
        let Some(token) = bearer(headers) else {
            return Err(unauthorized(
                "Missing bearer token: /metrics needs a Kubernetes service account token allowed to get /metrics",
            ));
        };
        match reviewer.verdict(token).await {
            Ok(Verdict::Allowed) => Ok(()),
            Ok(Verdict::Unknown) => Err(unauthorized("The Kubernetes API did not accept the token")),
            Ok(Verdict::Forbidden(user)) => Err(failure(
                StatusCode::FORBIDDEN,
                format!(
                    "{user} may not get /metrics: bind it to a ClusterRole with get on the non-resource URL /metrics"
                ),
            )),
            Err(err) => {
                tracing::warn!(%err, "cannot review a /metrics token");
                Err(failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Cannot check the token: the Kubernetes API did not answer",
                ))
            }
        }
    }
}

impl Reviewer {
    async fn verdict(&self, token: &str) -> Result<Verdict, kube::Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self.remembered(&key) {
            return Ok(v);
        }
        let verdict = self.review(token).await.inspect_err(|_| {
            self.metrics.metrics_review("error");
        })?;
        self.metrics.metrics_review(match verdict {
            Verdict::Allowed => "allowed",
            Verdict::Unknown => "unauthenticated",
            Verdict::Forbidden(_) => "forbidden",
        });
        let mut answers = lock(&self.answers);
        if answers.len() >= CACHE_CAP {
            answers.clear();
        }
        answers.insert(key, (verdict.clone(), Instant::now()));
        Ok(verdict)
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Verdict> {
        let answers = lock(&self.answers);
        let (verdict, at) = answers.get(key)?;
        let keep = if *verdict == Verdict::Allowed {
            ALLOWED_FOR
        } else {
            REFUSED_FOR
        };
        (at.elapsed() < keep).then(|| verdict.clone())
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let Some(status) = reviewed.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(Verdict::Unknown);
        };
        let user = status.user.unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        Ok(if decided.status.is_some_and(|s| s.allowed) {
            Verdict::Allowed
        } else {
            Verdict::Forbidden(user.username.unwrap_or_else(|| "the token's user".into()))
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(message: &str) -> Response {
    let mut resp = failure(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A poisoned lock only means a holder panicked between plain inserts.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_taken_from_the_authorization_header_only() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&with("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn open_metrics_need_no_token() {
        assert!(MetricsAuth::Open.check(&HeaderMap::new()).await.is_ok());
    }
}
