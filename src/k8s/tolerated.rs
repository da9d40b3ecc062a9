//! API answers a caller expects and treats as an outcome rather than an error: a create that
//! finds the object already there, a delete that finds it gone, a compare-and-swap that lost.

/// The object is not there (HTTP 404).
pub(crate) const NOT_FOUND: u16 = 404;
/// The object already exists, or a precondition (uid, resourceVersion) did not hold (HTTP 409).
pub(crate) const CONFLICT: u16 = 409;

/// `Ok(Some(value))` on success, `Ok(None)` when the apiserver answered with one of `codes`,
/// the error otherwise.
pub(crate) fn tolerating<T>(result: Result<T, kube::Error>, codes: &[u16]) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if codes.contains(&status.code) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn success_is_some() {
        assert_eq!(
            tolerating(Ok::<_, kube::Error>(7), &[NOT_FOUND]).unwrap(),
            Some(7)
        );
    }

    #[test]
    fn a_listed_code_is_none() {
        for code in [NOT_FOUND, CONFLICT] {
            let r = tolerating::<()>(Err(api_error(code)), &[NOT_FOUND, CONFLICT]);
            assert_eq!(r.unwrap(), None, "code {code}");
        }
    }

    #[test]
    fn other_codes_and_transport_errors_stay_errors() {
        assert!(tolerating::<()>(Err(api_error(CONFLICT)), &[NOT_FOUND]).is_err());
        assert!(tolerating::<()>(Err(api_error(500)), &[NOT_FOUND, CONFLICT]).is_err());
        let transport = kube::Error::Service("connection refused".into());
        assert!(tolerating::<()>(Err(transport), &[NOT_FOUND]).is_err());
    }
}
