//! The OpenAPI 3.0 document of the control API, `openapi.json` next to
//! this file, served as is at `/api/v1/openapi.json`.
//!
//! The document is written by hand; the tests below hold it to the code:
//! the same routes and methods as [`ROUTES`](super::routes::ROUTES), the
//! same role per endpoint (`x-required-role`), and the same error codes as
//! [`ERROR_CODES`](super::envelope::ERROR_CODES).

use bytes::Bytes;
use http::{Response, header};

use super::envelope::{Body, JSON, RequestId, full};

/// The document's text.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document as a response (raw, not in the envelope, so that tools
/// read it directly).
pub fn response(request_id: &RequestId) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(DOCUMENT.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(JSON));
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    request_id.stamp(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::envelope::ERROR_CODES;
    use super::super::routes::{Endpoint, ROUTES};
    use super::*;

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    const METHODS: [&str; 5] = ["get", "post", "patch", "delete", "put"];

    #[test]
    fn documented_routes_are_the_served_routes() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = BTreeSet::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<_> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served, "openapi.json and ROUTES disagree");
    }

    #[test]
    fn documented_roles_are_the_enforced_roles() {
        let doc = document();
        for (method, path, endpoint) in ROUTES {
            let operation = &doc["paths"][path][method.to_lowercase()];
            let documented = operation["x-required-role"].as_str();
            let enforced = Endpoint::role(*endpoint).map(|r| r.as_str());
            assert_eq!(documented, enforced, "{method} {path}");
            let secured = operation
                .get("security")
                .and_then(|s| s.as_array())
                .is_none_or(|s| !s.is_empty());
            assert_eq!(secured, enforced.is_some(), "security of {method} {path}");
            if enforced.is_some() {
                for status in ["401", "403", "429"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn documented_error_codes_are_the_used_codes() {
        let doc = document();
        let codes: BTreeSet<&str> =
            doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
                .as_array()
                .expect("Error.code enum")
                .iter()
                .filter_map(|c| c.as_str())
                .collect();
        let used: BTreeSet<&str> = ERROR_CODES.iter().copied().collect();
        assert_eq!(codes, used);
    }
}
