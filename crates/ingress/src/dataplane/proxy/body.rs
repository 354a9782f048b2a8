//! Body plumbing. Bodies stream frame by frame in both directions; nothing
//! is buffered whole.
//!
//! * [`BodySlot`] / [`UpstreamBody`]: the client's request body sent
//!   upstream. It sits in a shared slot and is taken on the first poll, so
//!   an attempt that failed to connect (and so never polled it) leaves it
//!   for the next endpoint: retries work for bodies too. Bytes are counted
//!   against `proxy-body-size`; going over fails the upstream request and
//!   raises a flag the pipeline turns into 413.
//! * [`Observed`]: wraps every response to the client, counts bytes and
//!   runs [`End::finish`] (metrics, in-flight guards) when the body ends
//!   or is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the proxy sends to clients.
pub(super) type Body = UnsyncBoxBody<Bytes, BoxError>;

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(super) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why an upstream request body stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("request body larger than proxy-body-size ({0} bytes)")]
    TooLarge(u64),
    #[error("request body already sent to another endpoint")]
    Gone,
}

/// The client's request body, shared by the attempts of one request.
pub(super) struct BodySlot {
    slot: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    empty: bool,
    limit: Option<u64>,
    exceeded: Arc<AtomicBool>,
}

impl BodySlot {
    pub(super) fn new(body: Incoming, limit: Option<u64>) -> BodySlot {
        BodySlot {
            hint: body.size_hint(),
            empty: body.is_end_stream(),
            slot: Arc::new(Mutex::new(Some(body))),
            limit,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle for one attempt.
    pub(super) fn body(&self) -> UpstreamBody {
        UpstreamBody {
            slot: Some(self.slot.clone()),
            inner: None,
            hint: self.hint,
            empty: self.empty,
            limit: self.limit,
            seen: 0,
            exceeded: self.exceeded.clone(),
        }
    }

    /// Whether no attempt has started reading the body (so another
    /// endpoint can still get all of it).
    pub(super) fn intact(&self) -> bool {
        self.empty || self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Whether the body went over `proxy-body-size`.
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }
}

/// The request body as one upstream attempt sees it.
pub struct UpstreamBody {
    slot: Option<Arc<Mutex<Option<Incoming>>>>,
    inner: Option<Incoming>,
    hint: SizeHint,
    empty: bool,
    limit: Option<u64>,
    seen: u64,
    exceeded: Arc<AtomicBool>,
}

impl UpstreamBody {
    /// No body (WebSocket handshakes, bodies that were empty anyway).
    pub(super) fn none() -> UpstreamBody {
        UpstreamBody {
            slot: None,
            inner: None,
            hint: SizeHint::with_exact(0),
            empty: true,
            limit: None,
            seen: 0,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.empty {
            return Poll::Ready(None);
        }
        if this.inner.is_none() {
            let taken = this
                .slot
                .take()
                .and_then(|slot| slot.lock().ok().and_then(|mut s| s.take()));
            match taken {
                Some(body) => this.inner = Some(body),
                None => return Poll::Ready(Some(Err(BodyError::Gone.into()))),
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit).into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.empty || self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}

/// Called once when a response body is done (ended, failed or dropped).
pub(super) trait End: Send + 'static {
    fn finish(self: Box<Self>, bytes: u64);
}

/// A response body that reports its size and end.
pub(super) struct Observed<B> {
    inner: B,
    bytes: u64,
    end: Option<Box<dyn End>>,
}

impl<B> Observed<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(super) fn wrap(inner: B, end: Box<dyn End>) -> Body {
        Observed {
            inner,
            bytes: 0,
            end: Some(end),
        }
        .boxed_unsync()
    }
}

impl<B> HttpBody for Observed<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(end) = this.end.take() {
                    end.finish(this.bytes);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    end.finish(this.bytes);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        // A body hyper did not poll to its end (HEAD, 204, 304, or the
        // client went away) ends here.
        if let Some(end) = self.end.take() {
            end.finish(self.bytes);
        }
    }
}
