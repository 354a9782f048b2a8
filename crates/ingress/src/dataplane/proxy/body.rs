//! Body plumbing. Bodies stream frame by frame in both directions; nothing
//! is buffered whole.
//!
//! * [`BodySlot`] / [`UpstreamBody`]: the client's request body sent
//!   upstream. It sits in a shared slot and is taken on the first poll, so
//!   an attempt that failed to connect (and so never polled it) leaves it
//!   for the next endpoint: retries work for bodies too. Bytes are counted
//!   against `proxy-body-size`. When the body goes wrong on the client's
//!   side (over the limit, a broken chunked encoding, or no bytes for
//!   `client-body-timeout`) the upstream request fails and the slot
//!   records why, so the pipeline answers as nginx does (413, 400, 408)
//!   instead of blaming the upstream (502, 504).
//! * [`Observed`]: wraps every response to the client, counts bytes and
//!   runs [`End::finish`] (metrics, in-flight guards) when the body ends
//!   or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

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
    #[error("client sent no request body bytes for {0:?}")]
    Timeout(Duration),
}

/// Why the client's request body failed, when it was the client's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFault {
    /// Over `proxy-body-size`: 413.
    TooLarge = 1,
    /// Not valid framing (a bad chunk size, a bare LF, ...): 400.
    Malformed = 2,
    /// Stalled for `client-body-timeout`: 408.
    Stalled = 3,
}

impl BodyFault {
    fn from_u8(v: u8) -> Option<BodyFault> {
        match v {
            1 => Some(BodyFault::TooLarge),
            2 => Some(BodyFault::Malformed),
            3 => Some(BodyFault::Stalled),
            _ => None,
        }
    }
}

/// The client's request body, shared by the attempts of one request.
pub(super) struct BodySlot {
    slot: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    empty: bool,
    limit: Option<u64>,
    idle_timeout: Duration,
    fault: Arc<AtomicU8>,
}

impl BodySlot {
    /// `limit` is `proxy-body-size`; `idle_timeout` is
    /// `client-body-timeout`, the longest wait for the next body bytes.
    pub(super) fn new(body: Incoming, limit: Option<u64>, idle_timeout: Duration) -> BodySlot {
        BodySlot {
            hint: body.size_hint(),
            empty: body.is_end_stream(),
            slot: Arc::new(Mutex::new(Some(body))),
            limit,
            idle_timeout,
            fault: Arc::new(AtomicU8::new(0)),
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
            idle_timeout: self.idle_timeout,
            idle: None,
            waiting: false,
            fault: self.fault.clone(),
        }
    }

    /// Whether no attempt has started reading the body (so another
    /// endpoint can still get all of it).
    pub(super) fn intact(&self) -> bool {
        self.empty || self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Whether (and how) the client's body went wrong.
    pub(super) fn fault(&self) -> Option<BodyFault> {
        BodyFault::from_u8(self.fault.load(Ordering::Acquire))
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
    idle_timeout: Duration,
    /// Armed when the client's body has no bytes ready; fires after
    /// `idle_timeout` of continuous waiting.
    idle: Option<Pin<Box<Sleep>>>,
    /// Whether the last poll found nothing (so `idle` is running).
    waiting: bool,
    fault: Arc<AtomicU8>,
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
            idle_timeout: Duration::MAX,
            idle: None,
            waiting: false,
            fault: Arc::new(AtomicU8::new(0)),
        }
    }

    fn failed(
        &mut self,
        fault: BodyFault,
        error: BoxError,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.fault.store(fault as u8, Ordering::Release);
        // Nothing more is read from a body that failed.
        self.inner = None;
        self.empty = true;
        Poll::Ready(Some(Err(error)))
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
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        return this.failed(BodyFault::TooLarge, BodyError::TooLarge(limit).into());
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // hyper's decoder refused the framing (or the client went
            // away mid-body): the client's fault either way.
            Poll::Ready(Some(Err(e))) => this.failed(BodyFault::Malformed, e.into()),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    // `Duration::MAX` (no body expected) never arms.
                    if let Some(deadline) = Instant::now().checked_add(this.idle_timeout) {
                        match this.idle.as_mut() {
                            Some(idle) => idle.as_mut().reset(deadline),
                            None => {
                                this.idle = Some(Box::pin(tokio::time::sleep_until(deadline)));
                            }
                        }
                    }
                }
                match this.idle.as_mut().map(|idle| idle.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        let timeout = this.idle_timeout;
                        this.failed(BodyFault::Stalled, BodyError::Timeout(timeout).into())
                    }
                    _ => Poll::Pending,
                }
            }
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
