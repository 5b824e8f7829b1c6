//! What the server answers, as a pure function of the request line:
//! `GET /metrics` the exposition, `HEAD /metrics` its headers, other paths
//! `404`, other methods `405`. Malformed and oversized requests never get
//! here: hyper answers them `400` and `431` itself.

use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

use super::SampleSource;
use crate::metrics::render::{render, CONTENT_TYPE as EXPOSITION_TYPE};

/// The type of every answer that is not the exposition.
const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `method path` (the path without its query). The body is
/// whole; for `HEAD` it is empty and `Content-Length` says how long the
/// `GET` body is.
pub(super) fn respond(method: &Method, path: &str, source: &SampleSource) -> Response<Bytes> {
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            answer
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return answer;
        }
    };
    if path != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    let (sample, snapshot) = source();
    let body = Bytes::from(render(&sample, &snapshot));
    let length = HeaderValue::from(body.len());
    let mut answer = Response::new(if head { Bytes::new() } else { body });
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(EXPOSITION_TYPE));
    if head {
        // hyper writes no body for HEAD; the length is the GET body's.
        headers.insert(CONTENT_LENGTH, length);
    }
    answer
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut answer = Response::new(Bytes::from_static(body.as_bytes()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    answer
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::MetricsSample;
    use crate::table::Snapshot;

    #[test]
    fn requests_are_routed_by_method_then_path() {
        let source: SampleSource =
            Arc::new(|| (MetricsSample::default(), Arc::new(Snapshot::empty())));
        let get = respond(&Method::GET, "/metrics", &source);
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.headers()[CONTENT_TYPE], EXPOSITION_TYPE);
        let body = get.body().clone();
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("flowgate_snapshot_generation"));

        let head = respond(&Method::HEAD, "/metrics", &source);
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head.body().is_empty());
        assert_eq!(head.headers()[CONTENT_LENGTH], body.len().to_string());

        for path in ["/", "/metricsx", "/metrics/", ""] {
            let answer = respond(&Method::GET, path, &source);
            assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path:?}");
            assert_eq!(answer.headers()[CONTENT_TYPE], TEXT);
        }
        for method in [Method::POST, Method::DELETE, Method::OPTIONS, Method::PUT] {
            for path in ["/metrics", "/x"] {
                let answer = respond(&method, path, &source);
                assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
                assert_eq!(answer.headers()[ALLOW], "GET, HEAD");
            }
        }
    }
}
