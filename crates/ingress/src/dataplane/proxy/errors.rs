//! Responses the proxy writes itself: the default backend's 404 and the
//! error and redirect pages. They are shaped like nginx's built-in pages
//! (`server_tokens off`) so migrated health checks and scrapers that grep
//! them keep working; the footer names Ferry, and there is no `Server`
//! header.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Response, StatusCode};

use super::body::{Body, empty, full};

/// The nginx-style HTML page for `status`.
pub(super) fn page_body(status: StatusCode) -> Bytes {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    Bytes::from(format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
         <center><h1>{title}</h1></center>\r\n<hr><center>ferry</center>\r\n\
         </body>\r\n</html>\r\n"
    ))
}

/// An HTML error page (404 of the default backend, 403, 413, 502, ...).
pub(super) fn page(status: StatusCode) -> Response<Body> {
    let body = page_body(status);
    let mut resp = Response::new(full(body.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

/// An error page after which the connection is closed (malformed
/// requests: nothing later on that connection can be trusted).
pub(super) fn page_close(status: StatusCode) -> Response<Body> {
    let mut resp = page(status);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A redirect with nginx's page as body; `None` when `location` is not a
/// valid header value (the caller answers 500).
pub(super) fn redirect(status: StatusCode, location: &str) -> Option<Response<Body>> {
    let value = HeaderValue::from_str(location).ok()?;
    let mut resp = page(status);
    resp.headers_mut().insert(LOCATION, value);
    Some(resp)
}

/// A body-less response (CORS preflight 204).
pub(super) fn no_content() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_backend_page_is_nginx_shaped() {
        let body = page_body(StatusCode::NOT_FOUND);
        assert_eq!(
            &body[..],
            b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
              <center><h1>404 Not Found</h1></center>\r\n<hr><center>ferry</center>\r\n\
              </body>\r\n</html>\r\n"
        );
        let resp = page(StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html");
        assert!(resp.headers().get(http::header::SERVER).is_none());
        assert!(redirect(StatusCode::PERMANENT_REDIRECT, "bad\nvalue").is_none());
    }
}
