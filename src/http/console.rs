//! `GET /`: the session console, a static page embedded in the binary (no build step). The
//! page holds no data: its script asks the bearer-protected API with the key a person enters,
//! so it is served open, under a Content-Security-Policy that allows only its own script and
//! style and connections back to this server.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// No inline script or style, nothing from another origin, no framing; QR codes are images
/// the script makes from fetched PNGs (blob: URLs).
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub(super) fn router() -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX, "text/html; charset=utf-8") }))
        .route(
            "/console.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Revalidated on each load: after an upgrade the page and its script match.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_page_and_its_files_are_served_with_the_policy() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
        ] {
            let resp = router()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let h = resp.headers();
            assert!(
                h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
                "{path}"
            );
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_names_no_other_origin() {
        // The policy would block them; this keeps the page from depending on them.
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains("<style"),
            "inline code"
        );
        assert!(
            !INDEX.contains(" style=") && !INDEX.contains(" onclick="),
            "inline attributes"
        );
        for file in [INDEX, SCRIPT, STYLE] {
            assert!(
                !file.contains("http://") && !file.contains("https://"),
                "another origin"
            );
        }
        assert!(SCRIPT.contains("sessionStorage") && !SCRIPT.contains("localStorage"));
        assert!(!SCRIPT.contains("innerHTML"), "values are written as text");
    }
}
