//! HTTP plumbing: bodies, responses, query strings and content negotiation.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Response, StatusCode, header};
use serde_json::Value;

use crate::status::ApiError;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json_bytes(code: u16, body: impl Into<Bytes>, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("static response parts are valid")
}

pub fn json(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    json_bytes(code, body, "application/json")
}

pub fn error(e: &ApiError) -> Response<Body> {
    let mut resp = json(e.code, &e.to_status());
    if let Some(s) = e.details.retry_after_seconds {
        resp.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    resp
}

pub fn text(code: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(body))
        .expect("static response parts are valid")
}

/// Query parameters; the last value wins for repeated keys.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.0.get(key).map(String::as_str), Some("true" | "1"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for query parameter {key}"))
            }),
        }
    }
}

use ferry_api::url::percent_decode;

/// One media range from an Accept header, with its parameters.
fn media_ranges(accept: &str) -> impl Iterator<Item = (String, HashMap<String, String>)> + '_ {
    accept.split(',').map(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        (media, params)
    })
}

/// The client asked for a `meta.k8s.io/v1` Table (as `kubectl get` does).
pub fn wants_table(accept: &str) -> bool {
    media_ranges(accept).any(|(media, p)| {
        media == "application/json"
            && p.get("as").map(String::as_str) == Some("Table")
            && p.get("g").map(String::as_str) == Some("meta.k8s.io")
            && p.get("v").map(String::as_str) == Some("v1")
    })
}

/// The client asked for aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn wants_aggregated_discovery(accept: &str) -> bool {
    media_ranges(accept).any(|(media, p)| {
        media == "application/json"
            && p.get("as").map(String::as_str) == Some("APIGroupDiscoveryList")
            && p.get("g").map(String::as_str) == Some("apidiscovery.k8s.io")
            && p.get("v").map(String::as_str) == Some("v2")
    })
}

/// Reads the whole request body, refusing more than `limit` bytes. A body
/// whose declared length is over the limit is refused before any of it is
/// read, as kube-apiserver does: a client waiting for `100 Continue` then
/// never sends it.
pub async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ApiError> {
    if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(ApiError::too_large(limit));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(
            percent_decode("app%3Dweb%2Ctier+in+(a)"),
            "app=web,tier in (a)"
        );
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
        let q = Query::parse(Some("labelSelector=a%3Db&watch=true&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("a=b"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").ok().flatten(), Some(5));
    }

    #[test]
    fn negotiation() {
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(kubectl_get));
        assert!(!wants_table("application/json"));
        let discovery = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated_discovery(discovery));
        assert!(!wants_aggregated_discovery("application/json, */*"));
    }
}
