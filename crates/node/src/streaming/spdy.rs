//! SPDY/3.1 framing, as spoken by kubectl (moby/spdystream) after an HTTP
//! upgrade to `SPDY/3.1`.
//!
//! The pure part is [`decode_frame`] / [`encode_frame`]: bytes in, [`Frame`]s
//! out and back, with the name/value header blocks compressed by zlib primed
//! with the SPDY/3 dictionary. Each direction of a connection keeps one
//! compression context for its whole life ([`HeaderInflater`],
//! [`HeaderDeflater`]); every block ends with a zlib SYNC_FLUSH. The thin I/O
//! part is [`FrameReader`] and [`FrameWriter`]. Flow control (SETTINGS,
//! WINDOW_UPDATE) is parsed but not enforced, like spdystream does.
//!
//! Bad input gives a [`SpdyError`], never a panic; the caller answers it with a
//! GOAWAY and closes the connection.

use std::fmt;
use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The SPDY version this framer speaks (3.1 frames carry version 3).
pub const VERSION: u16 = 3;
/// DATA, SYN_STREAM, SYN_REPLY and HEADERS flag: the sender's half of the stream is done.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the receiver must not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status: the frame broke the protocol.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream is not (or no longer) known.
pub const RST_INVALID_STREAM: u32 = 2;
/// RST_STREAM status: the stream was refused before any processing.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is no longer needed.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status: a stream id was reused.
pub const RST_STREAM_IN_USE: u32 = 8;

/// GOAWAY status: normal session teardown.
pub const GOAWAY_OK: u32 = 0;
/// GOAWAY status: the peer broke the protocol.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Largest frame accepted. SPDY's 24-bit length field caps a frame at
/// 16 MiB - 1 anyway; the check keeps the limit explicit if that changes.
pub const MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;
/// Largest header block accepted once inflated (a zlib bomb stops here).
pub const MAX_HEADER_BLOCK_LENGTH: usize = 1024 * 1024;
/// Largest payload one DATA frame can carry (24-bit length).
pub const MAX_DATA_LENGTH: usize = (1 << 24) - 1;

const FRAME_HEADER_LENGTH: usize = 8;
const CONTROL_BIT: u32 = 0x8000_0000;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Adler-32 of the SPDY/3 dictionary: what a zlib stream primed with it
/// carries as DICTID (spdystream's frames start `78 f9 e3 c6 a7 c2`).
pub const DICTIONARY_ADLER32: u32 = 0xe3c6_a7c2;

/// The SPDY/3 header dictionary (draft 3, section 2.6.10.1): these words,
/// each behind a 32-bit big-endian length, then [`DICTIONARY_TAIL`] as is.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307",
    "402405406407408409410411412413414415416417",
    "502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec ",
    "00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut dictionary = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            dictionary.put_u32(word.len() as u32);
            dictionary.put_slice(word.as_bytes());
        }
        dictionary.put_slice(DICTIONARY_TAIL.as_bytes());
        dictionary
    })
}

/// What went wrong on a SPDY connection; every variant ends the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpdyError {
    /// Reading or writing the connection failed.
    Io(std::io::Error),
    /// The connection ended in the middle of a frame.
    Truncated,
    /// A control frame carries a version other than 3.
    UnsupportedVersion(u16),
    /// A frame is malformed.
    InvalidFrame {
        frame: &'static str,
        reason: &'static str,
    },
    /// A frame is longer than [`MAX_FRAME_LENGTH`] (or a DATA payload to
    /// send is longer than [`MAX_DATA_LENGTH`]).
    FrameTooLarge { length: usize },
    /// A header block inflates to more than [`MAX_HEADER_BLOCK_LENGTH`].
    HeaderBlockTooLarge,
    /// The zlib stream of the header blocks is corrupt or uses another dictionary.
    HeaderCompression(String),
}

impl fmt::Display for SpdyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpdyError::Io(err) => write!(f, "spdy connection: {err}"),
            SpdyError::Truncated => write!(f, "spdy connection closed in the middle of a frame"),
            SpdyError::UnsupportedVersion(version) => {
                write!(f, "spdy control frame: unsupported version {version}")
            }
            SpdyError::InvalidFrame { frame, reason } => write!(f, "spdy {frame} frame: {reason}"),
            SpdyError::FrameTooLarge { length } => {
                write!(f, "spdy frame of {length} bytes exceeds {MAX_FRAME_LENGTH}")
            }
            SpdyError::HeaderBlockTooLarge => write!(
                f,
                "spdy header block inflates beyond {MAX_HEADER_BLOCK_LENGTH} bytes"
            ),
            SpdyError::HeaderCompression(reason) => write!(f, "spdy header block zlib: {reason}"),
        }
    }
}

impl std::error::Error for SpdyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpdyError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<std::io::Error> for SpdyError {
    fn from(err: std::io::Error) -> Self {
        SpdyError::Io(err)
    }
}

fn invalid(frame: &'static str, reason: &'static str) -> SpdyError {
    SpdyError::InvalidFrame { frame, reason }
}

/// A SPDY name/value header block. Names are lower case on the wire;
/// several values of one name travel joined by NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; the name is lower-cased as SPDY/3 requires.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// The first value of `name`, compared without regard to case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.split('\0').next().unwrap_or_default())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One SETTINGS entry: flags, 24-bit id, value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded SPDY/3 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_stream_id: u32,
        /// 0 (highest) to 7.
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        settings: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta_window_size: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this framer does not know (CREDENTIAL,
    /// NOOP); SPDY/3 says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

/// Inflates the header blocks one peer sends: one zlib stream for the whole
/// connection, primed with the SPDY/3 dictionary when it asks for it.
pub struct HeaderInflater {
    zlib: Decompress,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderInflater {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Inflates one header block (the compressed bytes of one frame).
    pub fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let start = self.zlib.total_in();
        let consumed =
            |zlib: &Decompress| usize::try_from(zlib.total_in() - start).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(
            block
                .len()
                .saturating_mul(4)
                .clamp(256, MAX_HEADER_BLOCK_LENGTH + 1),
        );
        loop {
            if out.len() == out.capacity() {
                let grown = (out.capacity() * 2).min(MAX_HEADER_BLOCK_LENGTH + 1);
                out.reserve_exact(grown - out.len());
            }
            let input_before = consumed(&self.zlib);
            let output_before = out.len();
            let input = block.get(input_before..).unwrap_or_default();
            match self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(err) => match err.needs_dictionary() {
                    Some(DICTIONARY_ADLER32) => {
                        self.zlib
                            .set_dictionary(dictionary())
                            .map_err(|err| SpdyError::HeaderCompression(err.to_string()))?;
                        continue;
                    }
                    Some(other) => {
                        return Err(SpdyError::HeaderCompression(format!(
                            "stream asks for dictionary {other:#010x}, not SPDY/3's {DICTIONARY_ADLER32:#010x}"
                        )));
                    }
                    None => return Err(SpdyError::HeaderCompression(err.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK_LENGTH {
                return Err(SpdyError::HeaderBlockTooLarge);
            }
            // Everything given and room left over: the sync flush is complete.
            if consumed(&self.zlib) >= block.len() && out.len() < out.capacity() {
                break;
            }
            if consumed(&self.zlib) == input_before
                && out.len() == output_before
                && out.len() < out.capacity()
            {
                return Err(SpdyError::HeaderCompression(
                    "header block makes no progress".into(),
                ));
            }
        }
        Ok(out)
    }
}

/// Deflates the header blocks this side sends: one zlib stream for the whole
/// connection, primed with the SPDY/3 dictionary, a SYNC_FLUSH per block.
pub struct HeaderDeflater {
    zlib: Compress,
}

impl Default for HeaderDeflater {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDeflater {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(dictionary())
            .expect("a fresh zlib stream accepts a preset dictionary");
        Self { zlib }
    }

    /// Deflates one header block and sync-flushes it, so the peer can read it whole.
    pub fn deflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let start = self.zlib.total_in();
        let consumed =
            |zlib: &Compress| usize::try_from(zlib.total_in() - start).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let input_before = consumed(&self.zlib);
            let output_before = out.len();
            let input = block.get(input_before..).unwrap_or_default();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|err| SpdyError::HeaderCompression(err.to_string()))?;
            if consumed(&self.zlib) >= block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if consumed(&self.zlib) == input_before && out.len() == output_before {
                return Err(SpdyError::HeaderCompression(
                    "deflate makes no progress".into(),
                ));
            }
        }
    }
}

fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut block = Vec::with_capacity(
        4 + headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>(),
    );
    block.put_u32(headers.len() as u32);
    for (name, value) in headers.iter() {
        block.put_u32(name.len() as u32);
        block.put_slice(name.as_bytes());
        block.put_u32(value.len() as u32);
        block.put_slice(value.as_bytes());
    }
    block
}

fn decode_header_block(frame: &'static str, mut block: &[u8]) -> Result<Headers, SpdyError> {
    fn take<'a>(frame: &'static str, block: &mut &'a [u8]) -> Result<&'a [u8], SpdyError> {
        if block.len() < 4 {
            return Err(invalid(frame, "header block truncated"));
        }
        let length = block.get_u32() as usize;
        if block.len() < length {
            return Err(invalid(frame, "header block truncated"));
        }
        let (field, rest) = block.split_at(length);
        *block = rest;
        Ok(field)
    }
    if block.len() < 4 {
        return Err(invalid(frame, "header block truncated"));
    }
    let count = block.get_u32() as usize;
    // Each entry takes at least two length words: no allocation on a lie.
    if count > block.len() / 8 {
        return Err(invalid(frame, "header count exceeds the block"));
    }
    let mut headers = Headers(Vec::with_capacity(count));
    for _ in 0..count {
        let name = take(frame, &mut block)?;
        let value = take(frame, &mut block)?;
        headers.insert(
            &String::from_utf8_lossy(name),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(headers)
}

/// Decodes the next frame from `buf`, or `Ok(None)` when it holds only part
/// of one. Consumes the frame's bytes on success. A header block is inflated
/// through `inflater` even when the frame is otherwise invalid, since the
/// zlib stream spans frames.
pub fn decode_frame(
    buf: &mut BytesMut,
    inflater: &mut HeaderInflater,
) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < FRAME_HEADER_LENGTH {
        return Ok(None);
    }
    let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if length > MAX_FRAME_LENGTH {
        return Err(SpdyError::FrameTooLarge { length });
    }
    if buf.len() < FRAME_HEADER_LENGTH + length {
        buf.reserve(FRAME_HEADER_LENGTH + length - buf.len());
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_LENGTH);
    let mut payload = buf.split_to(length);

    if first & CONTROL_BIT == 0 {
        let stream_id = first & STREAM_ID_MASK;
        if stream_id == 0 {
            return Err(invalid("DATA", "stream id 0"));
        }
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: payload.freeze(),
        }));
    }

    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(SpdyError::UnsupportedVersion(version));
    }
    let frame_type = (first & 0xffff) as u16;
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            if length < 10 {
                return Err(invalid("SYN_STREAM", "shorter than 10 bytes"));
            }
            let stream_id = payload.get_u32() & STREAM_ID_MASK;
            let associated_stream_id = payload.get_u32() & STREAM_ID_MASK;
            let priority = payload.get_u8() >> 5;
            let _slot = payload.get_u8();
            let headers = decode_header_block("SYN_STREAM", &inflater.inflate(&payload)?)?;
            if stream_id == 0 {
                return Err(invalid("SYN_STREAM", "stream id 0"));
            }
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            let name = if frame_type == TYPE_SYN_REPLY {
                "SYN_REPLY"
            } else {
                "HEADERS"
            };
            if length < 4 {
                return Err(invalid(name, "shorter than 4 bytes"));
            }
            let stream_id = payload.get_u32() & STREAM_ID_MASK;
            let headers = decode_header_block(name, &inflater.inflate(&payload)?)?;
            if stream_id == 0 {
                return Err(invalid(name, "stream id 0"));
            }
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => {
            if length != 8 {
                return Err(invalid("RST_STREAM", "length is not 8"));
            }
            let stream_id = payload.get_u32() & STREAM_ID_MASK;
            let status = payload.get_u32();
            if stream_id == 0 {
                return Err(invalid("RST_STREAM", "stream id 0"));
            }
            Frame::RstStream { stream_id, status }
        }
        TYPE_SETTINGS => {
            if length < 4 {
                return Err(invalid("SETTINGS", "shorter than 4 bytes"));
            }
            let count = payload.get_u32() as usize;
            if count > payload.len() / 8 {
                return Err(invalid("SETTINGS", "entry count exceeds the frame"));
            }
            let settings = (0..count)
                .map(|_| {
                    let flags_and_id = payload.get_u32();
                    Setting {
                        flags: (flags_and_id >> 24) as u8,
                        id: flags_and_id & 0x00ff_ffff,
                        value: payload.get_u32(),
                    }
                })
                .collect();
            Frame::Settings { flags, settings }
        }
        TYPE_PING => {
            if length != 4 {
                return Err(invalid("PING", "length is not 4"));
            }
            Frame::Ping {
                id: payload.get_u32(),
            }
        }
        TYPE_GOAWAY => {
            if length != 8 {
                return Err(invalid("GOAWAY", "length is not 8"));
            }
            Frame::GoAway {
                last_good_stream_id: payload.get_u32() & STREAM_ID_MASK,
                status: payload.get_u32(),
            }
        }
        TYPE_WINDOW_UPDATE => {
            if length != 8 {
                return Err(invalid("WINDOW_UPDATE", "length is not 8"));
            }
            Frame::WindowUpdate {
                stream_id: payload.get_u32() & STREAM_ID_MASK,
                delta_window_size: payload.get_u32() & 0x7fff_ffff,
            }
        }
        frame_type => Frame::Unknown { frame_type },
    };
    Ok(Some(frame))
}

fn put_control_header(
    out: &mut Vec<u8>,
    frame_type: u16,
    flags: u8,
    length: usize,
) -> Result<(), SpdyError> {
    if length > MAX_DATA_LENGTH {
        return Err(SpdyError::FrameTooLarge { length });
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    out.put_u32((u32::from(flags) << 24) | length as u32);
    Ok(())
}

fn stream_id(frame: &'static str, id: u32) -> Result<u32, SpdyError> {
    if id == 0 || id > STREAM_ID_MASK {
        return Err(invalid(frame, "stream id out of range"));
    }
    Ok(id)
}

/// Appends the wire form of `frame` to `out`, compressing its header block
/// (if any) through `deflater`.
pub fn encode_frame(
    frame: &Frame,
    deflater: &mut HeaderDeflater,
    out: &mut Vec<u8>,
) -> Result<(), SpdyError> {
    match frame {
        Frame::SynStream {
            stream_id: id,
            associated_stream_id,
            priority,
            flags,
            headers,
        } => {
            let id = stream_id("SYN_STREAM", *id)?;
            let block = deflater.deflate(&encode_header_block(headers))?;
            put_control_header(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
            out.put_u32(id);
            out.put_u32(associated_stream_id & STREAM_ID_MASK);
            out.put_u8((priority & 0x07) << 5);
            out.put_u8(0);
            out.put_slice(&block);
        }
        Frame::SynReply {
            stream_id: id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id: id,
            flags,
            headers,
        } => {
            let (name, frame_type) = match frame {
                Frame::SynReply { .. } => ("SYN_REPLY", TYPE_SYN_REPLY),
                _ => ("HEADERS", TYPE_HEADERS),
            };
            let id = stream_id(name, *id)?;
            let block = deflater.deflate(&encode_header_block(headers))?;
            put_control_header(out, frame_type, *flags, 4 + block.len())?;
            out.put_u32(id);
            out.put_slice(&block);
        }
        Frame::RstStream {
            stream_id: id,
            status,
        } => {
            let id = stream_id("RST_STREAM", *id)?;
            put_control_header(out, TYPE_RST_STREAM, 0, 8)?;
            out.put_u32(id);
            out.put_u32(*status);
        }
        Frame::Settings { flags, settings } => {
            put_control_header(out, TYPE_SETTINGS, *flags, 4 + 8 * settings.len())?;
            out.put_u32(settings.len() as u32);
            for setting in settings {
                out.put_u32((u32::from(setting.flags) << 24) | (setting.id & 0x00ff_ffff));
                out.put_u32(setting.value);
            }
        }
        Frame::Ping { id } => {
            put_control_header(out, TYPE_PING, 0, 4)?;
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            put_control_header(out, TYPE_GOAWAY, 0, 8)?;
            out.put_u32(last_good_stream_id & STREAM_ID_MASK);
            out.put_u32(*status);
        }
        Frame::WindowUpdate {
            stream_id: id,
            delta_window_size,
        } => {
            put_control_header(out, TYPE_WINDOW_UPDATE, 0, 8)?;
            out.put_u32(id & STREAM_ID_MASK);
            out.put_u32(delta_window_size & 0x7fff_ffff);
        }
        Frame::Data {
            stream_id: id,
            flags,
            data,
        } => {
            let id = stream_id("DATA", *id)?;
            if data.len() > MAX_DATA_LENGTH {
                return Err(SpdyError::FrameTooLarge { length: data.len() });
            }
            out.put_u32(id);
            out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
            out.put_slice(data);
        }
        Frame::Unknown { frame_type } => {
            put_control_header(out, *frame_type, 0, 0)?;
        }
    }
    Ok(())
}

/// Reads frames from one direction of a connection.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    inflater: HeaderInflater,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            inflater: HeaderInflater::new(),
        }
    }

    /// The next frame, or `None` when the peer closed the connection between
    /// frames. Cancel-safe: bytes read so far stay buffered.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, &mut self.inflater)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(SpdyError::Truncated)
                };
            }
        }
    }
}

/// Writes frames to one direction of a connection. Frames are buffered by
/// the underlying writer until [`FrameWriter::flush`].
pub struct FrameWriter<W> {
    io: W,
    deflater: HeaderDeflater,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        Self {
            io,
            deflater: HeaderDeflater::new(),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// The underlying writer, for bytes that are not frames.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }

    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), SpdyError> {
        self.buf.clear();
        encode_frame(frame, &mut self.deflater, &mut self.buf)?;
        self.io.write_all(&self.buf).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), SpdyError> {
        self.io.flush().await?;
        Ok(())
    }

    /// Flushes and closes the write side of the connection.
    pub async fn shutdown(&mut self) -> Result<(), SpdyError> {
        self.io.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.insert(name, *value);
        }
        headers
    }

    fn decode_all(bytes: &[u8], inflater: &mut HeaderInflater) -> Result<Vec<Frame>, SpdyError> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, inflater)? {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(frames)
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let dictionary = dictionary();
        // Length and Adler-32 of moby/spdystream's spdy/dictionary.go; the
        // checksum is also the DICTID in Chromium's and node-spdy's SPDY/3
        // frames below (0xdfa251b2 would be the SPDY/2 dictionary).
        assert_eq!(dictionary.len(), 1423);
        assert_eq!(adler32(dictionary), DICTIONARY_ADLER32);
        assert_eq!(&dictionary[..11], b"\0\0\0\x07options");
        assert!(dictionary.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn deflated_blocks_carry_the_dictionary_id() {
        let mut deflater = HeaderDeflater::new();
        let block = deflater
            .deflate(&encode_header_block(&headers(&[("port", "80")])))
            .unwrap();
        // CMF 0x78 (deflate, 32K window), FLG with FDICT, then DICTID.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!((u16::from(block[0]) << 8 | u16::from(block[1])) % 31, 0);
        assert_eq!(&block[2..6], &DICTIONARY_ADLER32.to_be_bytes());
        assert!(
            block.ends_with(&[0x00, 0x00, 0xff, 0xff]),
            "sync flush ends the block"
        );
        // Later blocks continue the same zlib stream: no second header.
        let second = deflater
            .deflate(&encode_header_block(&headers(&[("port", "80")])))
            .unwrap();
        assert_ne!(&second[..2], &block[..2]);
    }

    #[test]
    fn frames_from_other_implementations_decode() {
        let mut inflater = HeaderInflater::new();
        // spdy-transport (node-spdy) test vectors, each on a fresh connection.
        let syn_stream = hex(
            "800300010000002c0000000100000000000078f9e3c6a7c202e50e507ab442a45a77d7105006b32a4804974d8cfa00000000ffff",
        );
        let frames = decode_all(&syn_stream, &mut inflater).unwrap();
        assert_eq!(
            frames,
            vec![Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[(":method", "GET"), (":path", "/")]),
            }]
        );
        let mut inflater = HeaderInflater::new();
        let syn_reply = hex("80030002000000140000000178f9e3c6a7c202a6230600000000ffff");
        let frames = decode_all(&syn_reply, &mut inflater).unwrap();
        assert_eq!(
            frames,
            vec![Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            }]
        );
        // Chromium's spdy_framer_test (SPDY/3 SYN_STREAM, zlib window bits 11).
        let mut inflater = HeaderInflater::new();
        let chromium = hex(
            "80030001 00000037 00000001 00000000 8000 38eae3c6a7c2 02e50e50 c24b4a04 e50b6680 004acbcf
             07082010 95969f0f a2000228 29b10820 80000000 00ffff",
        );
        let frames = decode_all(&chromium, &mut inflater).unwrap();
        assert_eq!(
            frames,
            vec![Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 4,
                flags: 0,
                headers: headers(&[("bar", "foo"), ("foo", "bar")]),
            }]
        );
    }

    #[test]
    fn every_frame_type_round_trips_on_one_connection() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: headers(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_stream_id: 1,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: headers(&[("x-many", "a\0b")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 1,
                settings: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 5 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: GOAWAY_PROTOCOL_ERROR,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta_window_size: 1 << 20,
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::Unknown { frame_type: 10 },
        ];
        let mut deflater = HeaderDeflater::new();
        let mut wire = Vec::new();
        for frame in &frames {
            encode_frame(frame, &mut deflater, &mut wire).unwrap();
        }
        let mut inflater = HeaderInflater::new();
        assert_eq!(decode_all(&wire, &mut inflater).unwrap(), frames);

        // Fed one byte at a time, the same frames come out.
        let mut inflater = HeaderInflater::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            if let Some(frame) = decode_frame(&mut buf, &mut inflater).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
    }

    #[test]
    fn header_lookup_ignores_case_and_takes_the_first_value() {
        let headers = headers(&[("StreamType", "data"), ("x", "one\0two")]);
        assert_eq!(headers.get("streamType"), Some("data"));
        assert_eq!(headers.iter().next(), Some(("streamtype", "data")));
        assert_eq!(headers.get("X"), Some("one"));
        assert_eq!(headers.get("port"), None);
    }

    #[test]
    fn a_header_block_that_inflates_past_the_limit_is_rejected() {
        let mut deflater = HeaderDeflater::new();
        let bomb = headers(&[("x", &"a".repeat(MAX_HEADER_BLOCK_LENGTH + 1))]);
        let syn = Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            flags: 0,
            headers: bomb,
        };
        let mut wire = Vec::new();
        encode_frame(&syn, &mut deflater, &mut wire).unwrap();
        assert!(wire.len() < 64 * 1024, "the bomb compresses well");
        let err = decode_all(&wire, &mut HeaderInflater::new()).unwrap_err();
        assert!(matches!(err, SpdyError::HeaderBlockTooLarge), "{err}");
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut inflater = HeaderInflater::new();
        // SPDY/2 control frame.
        let err = decode_all(&hex("80020006 00000004 00000001"), &mut inflater).unwrap_err();
        assert!(matches!(err, SpdyError::UnsupportedVersion(2)));
        // PING of the wrong length, RST_STREAM on stream 0, DATA on stream 0.
        for wire in [
            "80030006 00000003 000000",
            "80030003 00000008 00000000 00000001",
            "00000000 00000001 ff",
        ] {
            let err = decode_all(&hex(wire), &mut HeaderInflater::new()).unwrap_err();
            assert!(
                matches!(err, SpdyError::InvalidFrame { .. }),
                "{wire}: {err}"
            );
        }
        // A header block that is not zlib, and one with another dictionary.
        let err = decode_all(
            &hex("80030002 00000008 00000001 deadbeef"),
            &mut HeaderInflater::new(),
        )
        .unwrap_err();
        assert!(matches!(err, SpdyError::HeaderCompression(_)), "{err}");
        let err = decode_all(
            &hex("80030002 0000000a 00000001 78f9 dfa251b2"),
            &mut HeaderInflater::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("0xdfa251b2"), "{err}");
        // A header count no block could hold.
        let mut deflater = HeaderDeflater::new();
        let block = deflater.deflate(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        let mut wire = Vec::new();
        put_control_header(&mut wire, TYPE_SYN_REPLY, 0, 4 + block.len()).unwrap();
        wire.put_u32(1);
        wire.put_slice(&block);
        let err = decode_all(&wire, &mut HeaderInflater::new()).unwrap_err();
        assert!(matches!(err, SpdyError::InvalidFrame { .. }), "{err}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A few valid frames, then mutated copies and random bytes.
        let mut deflater = HeaderDeflater::new();
        let mut valid = Vec::new();
        for id in [1u32, 3, 5] {
            let syn = Frame::SynStream {
                stream_id: id,
                associated_stream_id: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "1")]),
            };
            encode_frame(&syn, &mut deflater, &mut valid).unwrap();
            let data = Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"payload"),
            };
            encode_frame(&data, &mut deflater, &mut valid).unwrap();
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let mut input = valid.clone();
            if round % 2 == 0 {
                for _ in 0..=(next() % 4) {
                    let at = (next() as usize) % input.len();
                    input[at] = next() as u8;
                }
                input.truncate((next() as usize) % (input.len() + 1));
            } else {
                input = (0..(next() % 300)).map(|_| next() as u8).collect();
            }
            let mut inflater = HeaderInflater::new();
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = decode_frame(&mut buf, &mut inflater) {}
        }
    }

    #[tokio::test]
    async fn reader_and_writer_carry_frames_over_a_stream() {
        let (client, server) = tokio::io::duplex(256);
        let (server_read, _server_write) = tokio::io::split(server);
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from(vec![7u8; 10_000]),
            },
            Frame::Ping { id: 1 },
        ];
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            let mut writer = FrameWriter::new(client);
            for frame in &sent {
                writer.write_frame(frame).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        let mut reader = FrameReader::new(server_read);
        let mut received = Vec::new();
        while let Some(frame) = reader.read_frame().await.unwrap() {
            received.push(frame);
        }
        writer.await.unwrap();
        assert_eq!(received, frames);
    }

    #[tokio::test]
    async fn a_connection_closed_mid_frame_is_truncated() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(&hex("80030006 00000004 0000"))
            .await
            .unwrap();
        drop(client);
        let mut reader = FrameReader::new(server);
        assert!(matches!(
            reader.read_frame().await,
            Err(SpdyError::Truncated)
        ));
    }
}
