//! Content negotiation for the bodies `render` makes as gzip members.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// Marks a response whose body is a gzip member if `gzip`, and in any case as varying with
/// `Accept-Encoding`, so caches keep the two bodies apart.
pub fn label(resp: &mut Response, gzip: bool) {
    let headers = resp.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
}

/// Whether the request's `Accept-Encoding` admits gzip (`gzip` or `x-gzip`, else `*`, with a
/// weight above zero). Without the header a client gets the body as is.
pub fn accepted(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let weight = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok());
            // An unreadable weight does not admit the coding.
            let admitted = weight.is_some_and(|q| q > 0.0 && q <= 1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(gzip.unwrap_or(false) || admitted);
            } else if coding == "*" {
                any = Some(any.unwrap_or(false) || admitted);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepted(&headers)
    }

    #[test]
    fn gzip_is_used_only_when_the_client_admits_it() {
        assert!(!accepts(&[]));
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["gzip, deflate, br"]));
        assert!(accepts(&["br;q=1.0, GZIP;q=0.5"]));
        assert!(accepts(&["x-gzip"]));
        assert!(accepts(&["*"]));
        assert!(accepts(&["identity", "gzip"]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["deflate, br"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.000"]));
        assert!(!accepts(&["gzip;q=0, *"]), "an explicit refusal wins over *");
        assert!(!accepts(&["*;q=0"]));
        assert!(!accepts(&["gzip;q=high"]));
        assert!(!accepts(&["gzip;q=2"]));
    }
}
