//! The server side of `kubectl port-forward` over SPDY/3.1
//! (`X-Stream-Protocol-Version: portforward.k8s.io`), as the kubelet speaks it.
//!
//! For every local connection kubectl opens two streams with the headers
//! `streamType: error|data`, `port` and `requestID`, each after the SYN_REPLY
//! to the one before. Once both streams of a request id are here, the data
//! stream is copied to and from a TCP connection to the pod's port; when that
//! ends, the error stream carries the failure (if any) and is closed. One
//! upgraded connection carries any number of such pairs.
//!
//! Data flow: the session loop reads frames and feeds each forwarded
//! connection's task through a queue; those tasks and the loop send frames to
//! a single writer task, which owns the outgoing header compression context.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::debug;

use super::spdy::{
    FLAG_FIN, Frame, FrameReader, FrameWriter, GOAWAY_PROTOCOL_ERROR, Headers, RST_CANCEL,
    RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, RST_STREAM_IN_USE, SpdyError,
};

/// The value of `X-Stream-Protocol-Version` this module speaks.
pub const PROTOCOL: &str = "portforward.k8s.io";

const STREAM_TYPE_HEADER: &str = "streamType";
const PORT_HEADER: &str = "port";
const REQUEST_ID_HEADER: &str = "requestID";
const STREAM_TYPE_ERROR: &str = "error";
const STREAM_TYPE_DATA: &str = "data";

/// How long the second stream of a pair may take to arrive (the kubelet's
/// default stream creation timeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the pod per DATA frame.
const COPY_CHUNK: usize = 32 * 1024;
/// Chunks from the client queued per forwarded connection; when full, the
/// session stops reading, as spdystream does.
const INBOUND_QUEUE: usize = 16;
/// Frames queued for the writer.
const OUTBOUND_QUEUE: usize = 64;

/// Serves one port-forward session over an upgraded SPDY/3.1 connection until the client closes it.
pub async fn serve<IO, C, F>(io: IO, connect: C)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Fn(u16) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    serve_pod(io, String::new(), connect).await;
}

/// Like [`serve`], naming the pod in the messages written to error streams
/// (`error forwarding port 80 to pod <pod>: ...`); an empty `pod` leaves it out.
pub async fn serve_pod<IO, C, F>(io: IO, pod: impl Into<String>, connect: C)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Fn(u16) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let writer = tokio::spawn(write_frames(
        FrameWriter::new(BufWriter::new(write)),
        out_rx,
    ));
    let (events, events_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        connect: Arc::new(connect),
        pod: pod.into().into(),
        out,
        events,
        streams: HashMap::new(),
        pairs: HashMap::new(),
        last_good_stream_id: 0,
        going_away: false,
    };
    session.run(FrameReader::new(read), events_rx).await;
    session.close();
    drop(session);
    // The writer ends once every sender (ours and the aborted tasks') is gone.
    let _ = writer.await;
}

/// Connects to `addr`, wording a failure like Go's dialer does, which is what
/// kubectl users see from a kubelet: `dial tcp 127.0.0.1:80: connect: connection refused`.
pub async fn dial(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await.map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("dial tcp {addr}: connect: {}", os_error_text(&err)),
        )
    })
}

/// "Connection refused (os error 111)" becomes "connection refused", as Go prints errno.
pub(crate) fn os_error_text(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn forward_error_message(port: u16, pod: &str, err: &io::Error) -> String {
    if pod.is_empty() {
        format!("error forwarding port {port}: {err}")
    } else {
        format!("error forwarding port {port} to pod {pod}: {err}")
    }
}

/// The `port` header, checked as the kubelet checks it.
fn parse_port(value: Option<&str>) -> Result<u16, String> {
    let value = match value {
        Some(value) if !value.is_empty() => value,
        _ => return Err(format!("{PORT_HEADER:?} header is required")),
    };
    let port: u16 = value
        .parse()
        .map_err(|err| format!("unable to parse {value:?} as a port: {err}"))?;
    if port == 0 {
        return Err(format!("port {value:?} must be > 0"));
    }
    Ok(port)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    Error,
    Data,
}

struct StreamEntry {
    request_id: String,
    kind: StreamKind,
}

/// The two streams of one forwarded connection.
#[derive(Default)]
struct Pair {
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    /// The data stream's port (the kubelet forwards to that one).
    port: Option<u16>,
    /// Why the pair cannot be forwarded, told on the error stream.
    problem: Option<String>,
    /// Client bytes for the data stream, queued until the forward task takes them.
    inbound: Option<mpsc::Sender<Inbound>>,
    inbound_rx: Option<mpsc::Receiver<Inbound>>,
    /// Tells the forward task the client reset the data stream.
    reset: Option<oneshot::Sender<()>>,
    error_reset: bool,
    data_reset: bool,
    forward: Option<AbortHandle>,
    timer: Option<AbortHandle>,
}

impl Pair {
    fn abort_tasks(&mut self) {
        if let Some(task) = self.forward.take() {
            task.abort();
        }
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

enum Inbound {
    Data(Bytes),
    Fin,
}

enum Event {
    /// The forward task of a request ended; `data_fin_sent` says whether it
    /// already closed our half of the data stream.
    Finished {
        request_id: String,
        data_fin_sent: bool,
    },
    /// A pair stayed incomplete for [`STREAM_CREATION_TIMEOUT`].
    TimedOut { request_id: String },
}

struct Session<C> {
    connect: Arc<C>,
    pod: Arc<str>,
    out: mpsc::Sender<Frame>,
    events: mpsc::UnboundedSender<Event>,
    streams: HashMap<u32, StreamEntry>,
    pairs: HashMap<String, Pair>,
    last_good_stream_id: u32,
    going_away: bool,
}

/// Whether the session goes on after a frame.
type Continue = bool;

impl<C, F> Session<C>
where
    C: Fn(u16) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        mut reader: FrameReader<R>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        debug!(pod = %self.pod, "port-forward session started");
        loop {
            let go_on = tokio::select! {
                frame = reader.read_frame() => match frame {
                    Ok(Some(frame)) => self.handle_frame(frame).await,
                    Ok(None) => false,
                    Err(SpdyError::Io(err)) => {
                        debug!(pod = %self.pod, error = %err, "port-forward connection failed");
                        false
                    }
                    Err(err) => {
                        debug!(pod = %self.pod, error = %err, "port-forward client broke the protocol");
                        let _ = self
                            .out
                            .send(Frame::GoAway {
                                last_good_stream_id: self.last_good_stream_id,
                                status: GOAWAY_PROTOCOL_ERROR,
                            })
                            .await;
                        false
                    }
                },
                Some(event) = events.recv() => self.handle_event(event).await,
            };
            if !go_on {
                break;
            }
        }
        debug!(pod = %self.pod, "port-forward session ended");
    }

    /// Stops every forwarded connection of the session.
    fn close(&mut self) {
        for pair in self.pairs.values_mut() {
            pair.abort_tasks();
        }
        self.pairs.clear();
        self.streams.clear();
    }

    async fn send(&self, frame: Frame) -> Continue {
        self.out.send(frame).await.is_ok()
    }

    async fn handle_frame(&mut self, frame: Frame) -> Continue {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => self.open_stream(stream_id, flags, &headers).await,
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.stream_data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, .. } => self.reset_stream(stream_id).await,
            // spdystream pings from odd ids and answers only the other parity.
            Frame::Ping { id } if !id.is_multiple_of(2) => self.send(Frame::Ping { id }).await,
            Frame::GoAway { .. } => {
                self.going_away = true;
                true
            }
            Frame::Ping { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => true,
        }
    }

    async fn open_stream(&mut self, stream_id: u32, flags: u8, headers: &Headers) -> Continue {
        if stream_id.is_multiple_of(2) || self.streams.contains_key(&stream_id) {
            let status = if stream_id.is_multiple_of(2) {
                RST_PROTOCOL_ERROR
            } else {
                RST_STREAM_IN_USE
            };
            return self.send(Frame::RstStream { stream_id, status }).await;
        }
        if self.going_away {
            return self
                .send(Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED_STREAM,
                })
                .await;
        }
        self.last_good_stream_id = self.last_good_stream_id.max(stream_id);
        // kubectl waits for this reply before it opens the pair's next stream.
        let reply = Frame::SynReply {
            stream_id,
            flags: 0,
            headers: Headers::new(),
        };
        if !self.send(reply).await {
            return false;
        }

        let kind = match headers.get(STREAM_TYPE_HEADER) {
            Some(STREAM_TYPE_ERROR) => StreamKind::Error,
            Some(STREAM_TYPE_DATA) => StreamKind::Data,
            other => {
                debug!(pod = %self.pod, stream_id, stream_type = ?other, "port-forward stream refused: bad streamType");
                return self
                    .send(Frame::RstStream {
                        stream_id,
                        status: RST_REFUSED_STREAM,
                    })
                    .await;
            }
        };
        let request_id = match headers.get(REQUEST_ID_HEADER) {
            Some(id) if !id.is_empty() => id.to_string(),
            // Clients older than the header open error then data stream with
            // consecutive odd ids; the kubelet pairs them the same way.
            _ => match kind {
                StreamKind::Error => stream_id.to_string(),
                StreamKind::Data => (i64::from(stream_id) - 2).to_string(),
            },
        };
        let port = parse_port(headers.get(PORT_HEADER));

        if !self.pairs.contains_key(&request_id) {
            let timer = self.start_timer(request_id.clone());
            self.pairs.insert(
                request_id.clone(),
                Pair {
                    timer: Some(timer),
                    ..Pair::default()
                },
            );
        }
        let Some(pair) = self.pairs.get_mut(&request_id) else {
            return true;
        };
        let slot = match kind {
            StreamKind::Error => &mut pair.error_stream,
            StreamKind::Data => &mut pair.data_stream,
        };
        if slot.is_some() {
            debug!(pod = %self.pod, request_id, stream_id, "port-forward stream refused: duplicate {kind:?} stream");
            return self
                .send(Frame::RstStream {
                    stream_id,
                    status: RST_PROTOCOL_ERROR,
                })
                .await;
        }
        *slot = Some(stream_id);
        match &port {
            Ok(port) if kind == StreamKind::Data => pair.port = Some(*port),
            Ok(_) => {}
            Err(problem) => {
                pair.problem.get_or_insert_with(|| problem.clone());
            }
        }
        if kind == StreamKind::Data {
            let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
            if flags & FLAG_FIN != 0 {
                let _ = inbound.try_send(Inbound::Fin);
            }
            pair.inbound = Some(inbound);
            pair.inbound_rx = Some(inbound_rx);
        }
        self.streams.insert(
            stream_id,
            StreamEntry {
                request_id: request_id.clone(),
                kind,
            },
        );

        if pair.error_stream.is_some() && pair.data_stream.is_some() {
            if let Some(timer) = pair.timer.take() {
                timer.abort();
            }
            if let Some(problem) = pair.problem.clone() {
                debug!(pod = %self.pod, request_id, problem, "port-forward request refused");
                return self.fail_pair(&request_id, problem).await;
            }
            self.start_forward(&request_id);
        }
        true
    }

    fn start_timer(&self, request_id: String) -> AbortHandle {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STREAM_CREATION_TIMEOUT).await;
            let _ = events.send(Event::TimedOut { request_id });
        })
        .abort_handle()
    }

    fn start_forward(&mut self, request_id: &str) {
        let Some(pair) = self.pairs.get_mut(request_id) else {
            return;
        };
        let (Some(error_stream), Some(data_stream), Some(port), Some(inbound)) = (
            pair.error_stream,
            pair.data_stream,
            pair.port,
            pair.inbound_rx.take(),
        ) else {
            return;
        };
        let (reset, reset_rx) = oneshot::channel();
        pair.reset = Some(reset);
        let task = Forward {
            request_id: request_id.to_string(),
            port,
            error_stream,
            data_stream,
            pod: self.pod.clone(),
            out: self.out.clone(),
        };
        debug!(pod = %self.pod, request_id, port, "port-forward connection started");
        let connect = self.connect.clone();
        let events = self.events.clone();
        pair.forward = Some(
            tokio::spawn(async move {
                let request_id = task.request_id.clone();
                let data_fin_sent = task.run(connect, inbound, reset_rx).await;
                let _ = events.send(Event::Finished {
                    request_id,
                    data_fin_sent,
                });
            })
            .abort_handle(),
        );
    }

    /// Tells `problem` on the pair's error stream, then closes the pair.
    async fn fail_pair(&mut self, request_id: &str, problem: String) -> Continue {
        let error_stream = self
            .pairs
            .get(request_id)
            .filter(|pair| !pair.error_reset)
            .and_then(|pair| pair.error_stream);
        if let Some(stream_id) = error_stream {
            let message = Frame::Data {
                stream_id,
                flags: 0,
                data: Bytes::from(problem),
            };
            if !self.send(message).await {
                return false;
            }
        }
        self.finish_pair(request_id, false).await
    }

    /// Closes our halves of a pair's streams and forgets the pair.
    async fn finish_pair(&mut self, request_id: &str, data_fin_sent: bool) -> Continue {
        let Some(mut pair) = self.pairs.remove(request_id) else {
            return true;
        };
        pair.abort_tasks();
        let mut go_on = true;
        if let Some(stream_id) = pair.data_stream {
            self.streams.remove(&stream_id);
            if !data_fin_sent && !pair.data_reset {
                go_on &= self.send(fin(stream_id)).await;
            }
        }
        // The client reads the error stream to its end before it lets go of
        // the local connection: it must always be closed.
        if let Some(stream_id) = pair.error_stream {
            self.streams.remove(&stream_id);
            if !pair.error_reset {
                go_on &= self.send(fin(stream_id)).await;
            }
        }
        go_on
    }

    async fn stream_data(&mut self, stream_id: u32, flags: u8, data: Bytes) -> Continue {
        // Data for streams we no longer track (or never did) is dropped, as spdystream does.
        let Some(entry) = self.streams.get(&stream_id) else {
            return true;
        };
        // kubectl only closes its half of the error stream; nothing to read there.
        if entry.kind == StreamKind::Error {
            return true;
        }
        let request_id = entry.request_id.clone();
        let Some(pair) = self.pairs.get(&request_id) else {
            return true;
        };
        let Some(inbound) = pair.inbound.clone() else {
            return true;
        };
        let forwarding = pair.forward.is_some();
        let mut messages = Vec::with_capacity(2);
        if !data.is_empty() {
            messages.push(Inbound::Data(data));
        }
        if flags & FLAG_FIN != 0 {
            messages.push(Inbound::Fin);
            if let Some(pair) = self.pairs.get_mut(&request_id) {
                pair.inbound = None;
            }
        }
        for message in messages {
            if forwarding {
                // Backpressure: a slow pod slows the whole session, like spdystream.
                if inbound.send(message).await.is_err() {
                    return true;
                }
            } else if inbound.try_send(message).is_err() {
                // Nobody consumes the queue until the pair is complete.
                debug!(pod = %self.pod, request_id, "port-forward data before the pair was complete overflowed");
                return self.cancel_pair(&request_id).await;
            }
        }
        true
    }

    async fn reset_stream(&mut self, stream_id: u32) -> Continue {
        let Some(entry) = self.streams.get(&stream_id) else {
            return true;
        };
        let (request_id, kind) = (entry.request_id.clone(), entry.kind);
        let Some(pair) = self.pairs.get_mut(&request_id) else {
            return true;
        };
        match kind {
            StreamKind::Error => pair.error_reset = true,
            StreamKind::Data => {
                pair.data_reset = true;
                pair.inbound = None;
                if let Some(reset) = pair.reset.take() {
                    // The forward task stops and reports Finished.
                    let _ = reset.send(());
                    return true;
                }
            }
        }
        if pair.forward.is_none() {
            return self.cancel_pair(&request_id).await;
        }
        true
    }

    /// Drops a pair that never started forwarding, resetting what the client did not.
    async fn cancel_pair(&mut self, request_id: &str) -> Continue {
        let Some(mut pair) = self.pairs.remove(request_id) else {
            return true;
        };
        pair.abort_tasks();
        let mut go_on = true;
        for (stream_id, reset) in [
            (pair.error_stream, pair.error_reset),
            (pair.data_stream, pair.data_reset),
        ] {
            if let Some(stream_id) = stream_id {
                self.streams.remove(&stream_id);
                if !reset {
                    go_on &= self
                        .send(Frame::RstStream {
                            stream_id,
                            status: RST_CANCEL,
                        })
                        .await;
                }
            }
        }
        go_on
    }

    async fn handle_event(&mut self, event: Event) -> Continue {
        match event {
            Event::Finished {
                request_id,
                data_fin_sent,
            } => {
                debug!(pod = %self.pod, request_id, "port-forward connection ended");
                if let Some(pair) = self.pairs.get_mut(&request_id) {
                    // The task is done; nothing left to abort.
                    pair.forward = None;
                }
                self.finish_pair(&request_id, data_fin_sent).await
            }
            Event::TimedOut { request_id } => {
                let incomplete = self
                    .pairs
                    .get(&request_id)
                    .is_some_and(|pair| pair.error_stream.is_none() || pair.data_stream.is_none());
                if !incomplete {
                    return true;
                }
                debug!(pod = %self.pod, request_id, "port-forward request timed out waiting for streams");
                let problem = format!("request {request_id}: timed out waiting for streams");
                self.fail_pair(&request_id, problem).await
            }
        }
    }
}

fn fin(stream_id: u32) -> Frame {
    Frame::Data {
        stream_id,
        flags: FLAG_FIN,
        data: Bytes::new(),
    }
}

/// One forwarded connection: the data stream of a pair and a TCP connection to the pod.
struct Forward {
    request_id: String,
    port: u16,
    error_stream: u32,
    data_stream: u32,
    pod: Arc<str>,
    out: mpsc::Sender<Frame>,
}

impl Forward {
    /// Forwards until both directions are done or the client resets the data
    /// stream; says whether it sent FIN on the data stream.
    async fn run<C, F>(
        self,
        connect: Arc<C>,
        inbound: mpsc::Receiver<Inbound>,
        mut reset: oneshot::Receiver<()>,
    ) -> bool
    where
        C: Fn(u16) -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        let connected = tokio::select! {
            connected = connect(self.port) => connected,
            _ = &mut reset => return false,
        };
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err(err) => {
                let message = forward_error_message(self.port, &self.pod, &err);
                debug!(pod = %self.pod, request_id = self.request_id, error = %message, "port-forward connect failed");
                let _ = self
                    .out
                    .send(Frame::Data {
                        stream_id: self.error_stream,
                        flags: 0,
                        data: Bytes::from(message),
                    })
                    .await;
                return false;
            }
        };
        let (pod_read, pod_write) = tcp.into_split();
        let upstream = client_to_pod(inbound, pod_write);
        let downstream = pod_to_client(pod_read, self.data_stream, &self.out);
        tokio::pin!(upstream, downstream);
        let (mut upstream_done, mut fin_sent) = (false, None);
        loop {
            tokio::select! {
                _ = &mut reset => return fin_sent.unwrap_or(false),
                () = &mut upstream, if !upstream_done => upstream_done = true,
                sent = &mut downstream, if fin_sent.is_none() => fin_sent = Some(sent),
            }
            if let (true, Some(sent)) = (upstream_done, fin_sent) {
                return sent;
            }
        }
    }
}

/// Copies client DATA to the pod; the client's FIN half-closes the TCP connection.
async fn client_to_pod(
    mut inbound: mpsc::Receiver<Inbound>,
    mut pod: tokio::net::tcp::OwnedWriteHalf,
) {
    while let Some(message) = inbound.recv().await {
        match message {
            Inbound::Data(data) => {
                if pod.write_all(&data).await.is_err() {
                    return;
                }
            }
            Inbound::Fin => {
                let _ = pod.shutdown().await;
                return;
            }
        }
    }
}

/// Copies what the pod sends into DATA frames, ending with FIN when the pod
/// closes; says whether the FIN went out.
async fn pod_to_client(
    mut pod: tokio::net::tcp::OwnedReadHalf,
    stream_id: u32,
    out: &mpsc::Sender<Frame>,
) -> bool {
    let mut buf = BytesMut::with_capacity(COPY_CHUNK);
    loop {
        buf.reserve(COPY_CHUNK);
        match pod.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return out.send(fin(stream_id)).await.is_ok(),
            Ok(_) => {
                let data = buf.split().freeze();
                if out
                    .send(Frame::Data {
                        stream_id,
                        flags: 0,
                        data,
                    })
                    .await
                    .is_err()
                {
                    return false;
                }
            }
        }
    }
}

/// The single owner of the outgoing half and its header compression context.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut frames: mpsc::Receiver<Frame>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(err) = writer.write_frame(&frame).await {
            debug!(error = %err, "port-forward write failed");
            return;
        }
        // Flush once the queue is drained, so bursts leave in few writes.
        if frames.is_empty()
            && let Err(err) = writer.flush().await
        {
            debug!(error = %err, "port-forward write failed");
            return;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
    use tokio::net::TcpListener;

    use super::super::spdy::GOAWAY_PROTOCOL_ERROR;
    use super::*;

    #[derive(Default, Debug)]
    struct StreamSeen {
        replied: bool,
        data: Vec<u8>,
        fin: bool,
        reset: bool,
    }

    /// A kubectl-like client built on the same framer.
    struct Client {
        reader: FrameReader<ReadHalf<DuplexStream>>,
        writer: FrameWriter<WriteHalf<DuplexStream>>,
        next_stream_id: u32,
        streams: HashMap<u32, StreamSeen>,
        pings: Vec<u32>,
        goaway: Option<u32>,
        closed: bool,
    }

    impl Client {
        fn new(io: DuplexStream) -> Self {
            let (read, write) = tokio::io::split(io);
            Self {
                reader: FrameReader::new(read),
                writer: FrameWriter::new(write),
                next_stream_id: 1,
                streams: HashMap::new(),
                pings: Vec::new(),
                goaway: None,
                closed: false,
            }
        }

        async fn send(&mut self, frame: Frame) {
            self.writer.write_frame(&frame).await.unwrap();
            self.writer.flush().await.unwrap();
        }

        /// Opens a stream with the given headers and waits for its SYN_REPLY, as client-go does.
        async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
            let stream_id = self.next_stream_id;
            self.next_stream_id += 2;
            let mut block = Headers::new();
            for (name, value) in headers {
                block.insert(name, *value);
            }
            self.send(Frame::SynStream {
                stream_id,
                associated_stream_id: 0,
                priority: 0,
                flags: 0,
                headers: block,
            })
            .await;
            self.wait(|client| client.stream(stream_id).replied).await;
            stream_id
        }

        /// Opens the error then the data stream of one forwarded connection.
        async fn open_pair(&mut self, port: u16, request_id: &str) -> (u32, u32) {
            let port = port.to_string();
            let error = self
                .open(&[
                    ("streamType", "error"),
                    ("port", &port),
                    ("requestID", request_id),
                ])
                .await;
            // client-go closes its half of the error stream right away.
            self.send(fin(error)).await;
            let data = self
                .open(&[
                    ("streamType", "data"),
                    ("port", &port),
                    ("requestID", request_id),
                ])
                .await;
            (error, data)
        }

        async fn data(&mut self, stream_id: u32, data: &[u8]) {
            self.send(Frame::Data {
                stream_id,
                flags: 0,
                data: Bytes::copy_from_slice(data),
            })
            .await;
        }

        fn stream(&mut self, stream_id: u32) -> &mut StreamSeen {
            self.streams.entry(stream_id).or_default()
        }

        /// Reads frames until `done` holds (a hang guard fails the test after a minute).
        async fn wait(&mut self, done: impl Fn(&mut Self) -> bool) {
            let wait = async {
                while !done(self) {
                    match self.reader.read_frame().await.unwrap() {
                        Some(Frame::SynReply { stream_id, .. }) => {
                            self.stream(stream_id).replied = true
                        }
                        Some(Frame::Data {
                            stream_id,
                            flags,
                            data,
                        }) => {
                            let stream = self.stream(stream_id);
                            assert!(!stream.fin, "data after FIN on stream {stream_id}");
                            stream.data.extend_from_slice(&data);
                            stream.fin = flags & FLAG_FIN != 0;
                        }
                        Some(Frame::RstStream { stream_id, .. }) => {
                            self.stream(stream_id).reset = true
                        }
                        Some(Frame::Ping { id }) => self.pings.push(id),
                        Some(Frame::GoAway { status, .. }) => self.goaway = Some(status),
                        Some(other) => panic!("unexpected frame {other:?}"),
                        None => {
                            self.closed = true;
                            assert!(done(self), "connection closed first");
                        }
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(60), wait)
                .await
                .expect("the server answers");
        }
    }

    async fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = conn.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        port
    }

    fn start(pod: &str) -> (Client, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let pod = pod.to_string();
        let session = tokio::spawn(async move {
            serve_pod(server, pod, |port| {
                dial(SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .await;
        });
        (Client::new(client), session)
    }

    #[tokio::test]
    async fn bytes_round_trip_and_fin_propagates_on_concurrent_connections() {
        let port = echo_server().await;
        let (mut client, session) = start("default/web");

        let (error_a, data_a) = client.open_pair(port, "0").await;
        let (error_b, data_b) = client.open_pair(port, "1").await;
        client.data(data_a, b"hello").await;
        client.data(data_b, b"world").await;
        client
            .wait(|c| c.stream(data_a).data == b"hello" && c.stream(data_b).data == b"world")
            .await;

        client.send(Frame::Ping { id: 1 }).await;
        client.wait(|c| c.pings == [1]).await;

        // The client's FIN half-closes the pod connection; the echo server
        // then closes, which comes back as FIN; after client-go's reset of
        // the data stream the error stream ends, empty.
        client.send(fin(data_a)).await;
        client.wait(|c| c.stream(data_a).fin).await;
        client
            .send(Frame::RstStream {
                stream_id: data_a,
                status: RST_CANCEL,
            })
            .await;
        client.wait(|c| c.stream(error_a).fin).await;
        assert!(client.stream(error_a).data.is_empty());

        // The other connection is untouched.
        assert!(!client.stream(data_b).fin);
        client.data(data_b, b" again").await;
        client
            .wait(|c| c.stream(data_b).data == b"world again")
            .await;
        client.send(fin(data_b)).await;
        client.wait(|c| c.stream(data_b).fin).await;
        client
            .send(Frame::RstStream {
                stream_id: data_b,
                status: RST_CANCEL,
            })
            .await;
        client.wait(|c| c.stream(error_b).fin).await;
        assert!(client.stream(error_b).data.is_empty());

        // A large transfer keeps its bytes in order.
        let (_, data_c) = client.open_pair(port, "2").await;
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in payload.chunks(40_000) {
            client.data(data_c, chunk).await;
        }
        client.send(fin(data_c)).await;
        client.wait(|c| c.stream(data_c).fin).await;
        assert!(client.stream(data_c).data == payload);

        drop(client);
        tokio::time::timeout(Duration::from_secs(60), session)
            .await
            .expect("the session ends when the client goes away")
            .unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_on_the_error_stream() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let (mut client, _session) = start("default/web");
        let (error, data) = client.open_pair(port, "0").await;
        client
            .wait(|c| c.stream(error).fin && c.stream(data).fin)
            .await;
        let message = String::from_utf8(client.stream(error).data.clone()).unwrap();
        assert_eq!(
            message,
            format!(
                "error forwarding port {port} to pod default/web: dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn bad_headers_are_reported_without_ending_the_session() {
        let port = echo_server().await;
        let (mut client, _session) = start("");
        for (bad_port, problem) in [
            (
                "http",
                "unable to parse \"http\" as a port: invalid digit found in string",
            ),
            ("0", "port \"0\" must be > 0"),
            ("", "\"port\" header is required"),
        ] {
            let request_id = format!("bad-{bad_port}");
            let error = client
                .open(&[
                    ("streamType", "error"),
                    ("port", bad_port),
                    ("requestID", &request_id),
                ])
                .await;
            let data = client
                .open(&[
                    ("streamType", "data"),
                    ("port", bad_port),
                    ("requestID", &request_id),
                ])
                .await;
            client
                .wait(|c| c.stream(error).fin && c.stream(data).fin)
                .await;
            assert_eq!(
                String::from_utf8(client.stream(error).data.clone()).unwrap(),
                problem
            );
        }

        // An unknown stream type is answered, then refused.
        let odd = client
            .open(&[("streamType", "stdin"), ("port", "80")])
            .await;
        client.wait(|c| c.stream(odd).reset).await;

        // A duplicate stream of a request is refused too.
        let (_, data) = client.open_pair(port, "dup").await;
        let duplicate = client
            .open(&[
                ("streamType", "data"),
                ("port", &port.to_string()),
                ("requestID", "dup"),
            ])
            .await;
        client.wait(|c| c.stream(duplicate).reset).await;

        // The session still forwards; the error message without a pod name.
        client.data(data, b"still here").await;
        client.wait(|c| c.stream(data).data == b"still here").await;
        let (error, data) = client.open_pair(1, "refused").await;
        client
            .wait(|c| c.stream(error).fin && c.stream(data).fin)
            .await;
        let message = String::from_utf8(client.stream(error).data.clone()).unwrap();
        assert!(
            message.starts_with("error forwarding port 1: dial tcp 127.0.0.1:1: connect: "),
            "{message}"
        );
    }

    #[tokio::test]
    async fn requests_without_an_id_pair_by_stream_id() {
        let port = echo_server().await;
        let (mut client, _session) = start("");
        let port = port.to_string();
        let error = client
            .open(&[("streamType", "error"), ("port", &port)])
            .await;
        let data = client
            .open(&[("streamType", "data"), ("port", &port)])
            .await;
        client.data(data, b"old client").await;
        client.wait(|c| c.stream(data).data == b"old client").await;
        client.send(fin(data)).await;
        client.wait(|c| c.stream(data).fin).await;
        client
            .send(Frame::RstStream {
                stream_id: data,
                status: RST_CANCEL,
            })
            .await;
        client.wait(|c| c.stream(error).fin).await;
    }

    #[tokio::test]
    async fn a_protocol_violation_ends_the_session_with_goaway() {
        let (mut client, session) = start("");
        let error = client
            .open(&[("streamType", "error"), ("port", "80"), ("requestID", "0")])
            .await;
        // A SPDY/2 PING: control bit, version 2, type 6.
        let spdy2_ping = [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        client
            .writer
            .get_mut()
            .write_all(&spdy2_ping)
            .await
            .unwrap();
        client.writer.flush().await.unwrap();
        client.wait(|c| c.closed).await;
        assert_eq!(client.goaway, Some(GOAWAY_PROTOCOL_ERROR));
        assert!(client.stream(error).replied);
        tokio::time::timeout(Duration::from_secs(60), session)
            .await
            .expect("the session ends after GOAWAY")
            .unwrap();
    }

    #[tokio::test]
    async fn garbage_never_crashes_the_session() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50 {
            let (mut attacker, server) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve(server, |port| {
                dial(SocketAddr::from(([127, 0, 0, 1], port)))
            }));
            let garbage: Vec<u8> = (0..512)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = attacker.write_all(&garbage).await;
            drop(attacker);
            tokio::time::timeout(Duration::from_secs(60), session)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn os_errors_read_like_go() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(os_error_text(&refused), "connection refused");
        let custom = io::Error::other("Custom");
        assert_eq!(os_error_text(&custom), "custom");
    }

    #[test]
    fn ports_are_checked_like_the_kubelet() {
        assert_eq!(parse_port(Some("8080")), Ok(8080));
        assert!(parse_port(Some("65536")).is_err());
        assert!(parse_port(None).is_err());
    }
}
