//! The server side of WebSocket (RFC 6455) as the remote-command protocol
//! uses it: the upgrade handshake, binary messages, ping/pong and close.
//! Client frames are masked; ours are not.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest message accepted from a client (stdin chunks are small).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade<B>(req: &hyper::Request<B>) -> bool {
    req.headers()
        .get_all(hyper::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The subprotocols a client offers (`Sec-WebSocket-Protocol`, in order).
pub fn offered_protocols<B>(req: &hyper::Request<B>) -> Vec<String> {
    req.headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// One frame, encoded (server to client: unmasked).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A binary message on one channel of the remote-command protocol.
pub fn channel_message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    frame(OP_BINARY, &payload)
}

/// A close frame with a status code (1000: normal closure).
pub fn close_frame(code: u16) -> Vec<u8> {
    frame(OP_CLOSE, &code.to_be_bytes())
}

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
}

fn protocol_error(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads a client's messages: data frames reassembled, control frames
/// (which may arrive between the fragments of a message) as they come.
pub struct Reader<R> {
    inner: R,
    /// The fragments so far of a message, and its opcode.
    partial: Vec<u8>,
    opcode: Option<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            partial: Vec::new(),
            opcode: None,
        }
    }

    /// The next whole message.
    pub async fn next(&mut self) -> std::io::Result<Message> {
        let r = &mut self.inner;
        loop {
            let mut head = [0u8; 2];
            r.read_exact(&mut head).await?;
            let fin = head[0] & 0x80 != 0;
            if head[0] & 0x70 != 0 {
                return Err(protocol_error(
                    "reserved bits set (no extension was agreed)",
                ));
            }
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => u64::from(r.read_u16().await?),
                127 => r.read_u64().await?,
                n => u64::from(n),
            };
            if !masked {
                return Err(protocol_error("client frames must be masked"));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|l| self.partial.len().saturating_add(*l) <= MAX_MESSAGE)
                .ok_or_else(|| protocol_error("message too large"))?;
            let mut mask = [0u8; 4];
            r.read_exact(&mut mask).await?;
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload).await?;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                OP_PING => {
                    if !fin || len > 125 {
                        return Err(protocol_error("bad ping frame"));
                    }
                    return Ok(Message::Ping(payload));
                }
                OP_PONG => return Ok(Message::Pong),
                OP_CLOSE => return Ok(Message::Close),
                OP_TEXT | OP_BINARY => {
                    if self.opcode.is_some() {
                        return Err(protocol_error("new message inside a fragmented one"));
                    }
                    self.opcode = Some(opcode);
                    self.partial = payload;
                }
                OP_CONTINUATION => {
                    if self.opcode.is_none() {
                        return Err(protocol_error("continuation without a message"));
                    }
                    self.partial.extend_from_slice(&payload);
                }
                _ => return Err(protocol_error("unknown opcode")),
            }
            if fin {
                let data = std::mem::take(&mut self.partial);
                return Ok(match self.opcode.take() {
                    Some(OP_TEXT) => Message::Text(data),
                    _ => Message::Binary(data),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A client frame: masked, as browsers and gorilla/websocket send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn messages_reassemble_and_control_frames_pass() {
        let big = vec![7u8; 300];
        let mut wire = client_frame(false, OP_BINARY, &[0, b'h']);
        wire.extend(client_frame(true, OP_PING, b"p"));
        wire.extend(client_frame(true, OP_CONTINUATION, b"i"));
        wire.extend(client_frame(true, OP_BINARY, &big));
        wire.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut r = Reader::new(wire.as_slice());
        // A ping in the middle of a fragmented message comes out first.
        assert_eq!(r.next().await.unwrap(), Message::Ping(b"p".to_vec()));
        assert_eq!(
            r.next().await.unwrap(),
            Message::Binary(vec![0, b'h', b'i'])
        );
        assert_eq!(r.next().await.unwrap(), Message::Binary(big));
        assert_eq!(r.next().await.unwrap(), Message::Close);
        assert!(r.next().await.is_err(), "EOF");
    }

    #[tokio::test]
    async fn bad_frames_are_errors() {
        let unmasked = frame(OP_BINARY, b"x");
        assert!(Reader::new(unmasked.as_slice()).next().await.is_err());
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(Reader::new(huge.as_slice()).next().await.is_err());
        let stray = client_frame(true, OP_CONTINUATION, b"x");
        assert!(Reader::new(stray.as_slice()).next().await.is_err());
    }

    #[test]
    fn server_frames_use_the_short_and_long_lengths() {
        assert_eq!(frame(OP_BINARY, b"ab"), vec![0x82, 2, b'a', b'b']);
        let f = frame(OP_BINARY, &[0; 200]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 200]);
        assert_eq!(channel_message(1, b"x"), vec![0x82, 2, 1, b'x']);
        assert_eq!(close_frame(1000), vec![0x88, 2, 0x03, 0xe8]);
    }
}
