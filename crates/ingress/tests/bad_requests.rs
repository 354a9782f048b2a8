//! Acceptance point 7, the fuzz part: "a fuzz corpus of malformed requests
//! (including CL/TE smuggling attempts) gets 400 and never crashes the
//! controller".
//!
//! Two tests, both over real TCP connections on 127.0.0.1 to a `Proxy`
//! serving one route (`a.test/` → a hyper echo backend from
//! `tests/support` that counts requests and records their paths):
//!
//! * `corpus`: a fixed list of hand-written attacks, each with the answer
//!   it must get (see [`Expect`]). For every entry: the answer is read to
//!   the end with a deadline, at most one response comes back, no
//!   `/smuggled` request ever reaches the backend, nothing panics, and a
//!   fresh connection still gets 200 afterwards. The statuses are the
//!   ones nginx / RFC 9112 give.
//! * `mutated_requests_never_crash_or_hang`: a proptest (500 cases,
//!   `PROPTEST_CASES` overrides) of valid requests with bytes flipped,
//!   inserted (CR, LF, `:`, NUL, extra CL/TE headers, ...), deleted,
//!   truncated or header lines duplicated, plus grammar soup and random
//!   bytes. Property: the proxy answers with well-formed HTTP/1.x
//!   responses or closes, within the deadline; a request carrying both
//!   Content-Length and Transfer-Encoding gets at most one response and
//!   the connection closed; no panic; a fresh request still gets 200; and
//!   at the end no connection is left open.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use ferry_ingress::dataplane::proxy::{Proxy, Settings};
use ferry_ingress::model::route::BackendProtocol;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

// ---------------------------------------------------------------------
// The corpus.

/// The bytes of one attack. Long ones are built: `before`, `unit` repeated
/// `times`, `after`.
#[derive(Clone, Copy)]
enum Raw {
    Lit(&'static [u8]),
    Repeat {
        before: &'static [u8],
        unit: &'static [u8],
        times: usize,
        after: &'static [u8],
    },
}

impl Raw {
    fn bytes(self) -> Vec<u8> {
        match self {
            Raw::Lit(b) => b.to_vec(),
            Raw::Repeat {
                before,
                unit,
                times,
                after,
            } => {
                let mut out = before.to_vec();
                for _ in 0..times {
                    out.extend_from_slice(unit);
                }
                out.extend_from_slice(after);
                out
            }
        }
    }
}

/// What an attack must get. Every case also gets the common checks: the
/// answer comes (or the connection closes) before the deadline, all of it
/// parses as HTTP/1.x responses (except `NotHttp1`), at most one final
/// response, no path with `smuggled` at the backend and at most one new
/// request there, no panic, and a fresh connection gets 200 afterwards.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Answered by the proxy itself (hyper's parser or the pipeline) with
    /// one of these statuses; the backend sees nothing. A 400/413/414/431
    /// also closes the connection.
    Refused(&'static [u16]),
    /// Content-Length and Transfer-Encoding together: hyper reads the body
    /// as chunked, ignores Content-Length and closes after the response.
    /// One 200, the connection closed, the backend saw exactly `/first`
    /// with a body of `body_len` bytes (and a Content-Length, if any, that
    /// says so).
    Chunked { body_len: u64 },
    /// Valid HTTP after all (RFC 9110/9112 allow it): forwarded once, 200,
    /// the backend saw exactly `/first` with `body_len` body bytes.
    Forwarded { body_len: u64 },
    /// A valid head with a broken (or never-ending) body: the head may
    /// reach the backend before the body turns out bad, but the client
    /// never gets a 2xx; any status it gets is one of these (or the
    /// connection just closes).
    BadBody(&'static [u16]),
    /// No answer at all: the connection is closed (header timeout).
    Silent,
    /// HTTP/2 (prior knowledge) garbage: no HTTP/1 answer, the connection
    /// closes, the backend sees nothing.
    NotHttp1,
}

struct Case {
    attack: &'static str,
    raw: Raw,
    expect: Expect,
}

/// A body hyper fails to decode after the head went upstream: 400, as
/// nginx (which checks the whole body before going upstream) answers.
const fn bad_body(attack: &'static str, raw: &'static [u8]) -> Case {
    Case {
        attack,
        raw: Raw::Lit(raw),
        expect: Expect::BadBody(&[400]),
    }
}

const fn case(attack: &'static str, raw: &'static [u8], expect: Expect) -> Case {
    Case {
        attack,
        raw: Raw::Lit(raw),
        expect,
    }
}

const R400: Expect = Expect::Refused(&[400]);

/// The smuggled request used below is exactly 40 (0x28) bytes:
/// `GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n`.
const CORPUS: &[Case] = &[
    // ---- CL/TE smuggling ------------------------------------------------
    // CL.TE: a CL-framed front end would forward `0\r\n\r\n` and leave
    // the GET for the back end. hyper: chunked wins, one response, close.
    case(
        "CL.TE: Content-Length then Transfer-Encoding, GET /smuggled after the 0-chunk",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::Chunked { body_len: 0 },
    ),
    // TE.CL: a CL-framed back end would read `28\r\n` and then see the
    // GET inside the chunk as a request. hyper: the chunk is body.
    case(
        "TE.CL: Transfer-Encoding then Content-Length: 4, GET /smuggled inside the chunk",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\
          Content-Length: 4\r\n\r\n28\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n\
          \r\n0\r\n\r\n",
        Expect::Chunked { body_len: 40 },
    ),
    // Header names and values are case-insensitive: still TE+CL.
    case(
        "CL.TE with lowercase header names and `Chunked`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\ncontent-length: 46\r\n\
          transfer-encoding: Chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::Chunked { body_len: 0 },
    ),
    // `Connection: keep-alive` must not keep an ambiguous connection open.
    case(
        "CL.TE with Connection: keep-alive",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive\r\n\
          Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::Chunked { body_len: 0 },
    ),
    // TE.TE obfuscation: a second TE line whose coding is not chunked
    // (hyper: the final coding must be chunked -> 400).
    case(
        "TE.TE: `chunked` then `Transfer-Encoding: x`, plus Content-Length",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    // ---- Content-Length shapes (hyper: 400) -----------------------------
    case(
        "duplicate Content-Length with different values",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Content-Length: 46\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "Content-Length as a list `6, 46`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6, 46\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "Content-Length with a plus sign",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: +6\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "negative Content-Length",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: -1\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "hex Content-Length `0x6`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0x6\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "whitespace inside Content-Length `4 6`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4 6\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "empty Content-Length",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: \r\n\r\n",
        R400,
    ),
    case(
        "Content-Length overflowing u64 (2^64)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 18446744073709551616\r\n\r\n",
        R400,
    ),
    // u64::MAX parses but is over hyper's maximum length: its TooLarge
    // error is answered 431.
    case(
        "Content-Length u64::MAX",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 18446744073709551615\r\n\r\n",
        Expect::Refused(&[400, 413, 431]),
    ),
    // Over the location's proxy-body-size (1 MiB default): 413 before any
    // body byte is read.
    case(
        "Content-Length 2 MiB over proxy-body-size, no body sent",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2097152\r\n\r\n",
        Expect::Refused(&[413]),
    ),
    // Optional whitespace around a field value is not part of it (RFC
    // 9110 5.5): a valid length.
    case(
        "Content-Length with surrounding OWS `  4  ` (valid)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length:   4  \r\n\r\nabcd",
        Expect::Forwarded { body_len: 4 },
    ),
    // CL.0: a GET whose body looks like a request must stay a body.
    case(
        "CL.0: GET with a 40-byte body that is a whole GET /smuggled",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 40\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::Forwarded { body_len: 40 },
    ),
    // ---- Transfer-Encoding variants -----------------------------------
    case(
        "Transfer-Encoding: xchunked (hyper: final coding not chunked)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "Transfer-Encoding: chunked, gzip (hyper: final coding not chunked)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "Transfer-Encoding: gzip, chunked (the proxy's 400)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "Transfer-Encoding: chunked twice (the proxy's 400)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "Transfer-Encoding: chunked then identity (hyper: last line not chunked)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\
          Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "Transfer-Encoding: `chunked,` with a trailing comma",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n",
        R400,
    ),
    // obs-fold is refused in requests (RFC 9112 5.2 allows 400).
    case(
        "Transfer-Encoding folded onto the next line (obs-fold), plus CL",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "tab before the colon `Transfer-Encoding\\t: chunked`, plus CL",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    // RFC 9112 5.1: whitespace between name and colon MUST get 400.
    case(
        "space before the colon `Transfer-Encoding : chunked`, plus CL",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "vertical tab before `chunked`, plus CL",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\
          Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        R400,
    ),
    case(
        "Transfer-Encoding on HTTP/1.0",
        b"POST /first HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        R400,
    ),
    // ---- chunked bodies (the head is valid, so it may go upstream) -----
    bad_body(
        "chunk size overflowing u64",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    ),
    bad_body(
        "chunk size garbage `zz`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          zz\r\nhello\r\n0\r\n\r\n",
    ),
    bad_body(
        "chunk size `0x5`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          0x5\r\nhello\r\n0\r\n\r\n",
    ),
    bad_body(
        "negative chunk size `-5`",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          -5\r\nhello\r\n0\r\n\r\n",
    ),
    bad_body(
        "chunk extension ending in a bare LF",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext\nhello\r\n0\r\n\r\n",
    ),
    Case {
        attack: "chunk extension of 20 KiB (hyper's limit is 16 KiB)",
        raw: Raw::Repeat {
            before: b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;",
            unit: b"x",
            times: 20 * 1024,
            after: b"\r\nhello\r\n0\r\n\r\n",
        },
        expect: Expect::BadBody(&[400]),
    },
    bad_body(
        "chunk data longer than its size (no CRLF after 3 bytes)",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nhello\r\n0\r\n\r\n",
    ),
    bad_body(
        "chunk lines ending in bare LF",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\nhello\n0\n\n",
    ),
    // Without the CRLF after the last chunk, what follows is the trailer
    // section: the GET is not a valid trailer.
    bad_body(
        "last chunk without its final CRLF, GET /smuggled where the trailers go",
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ),
    // The body never ends: `client-body-timeout` (1 s here, shorter than
    // the 2 s proxy-read-timeout) answers 408, as nginx does.
    Case {
        attack: "last chunk without its final CRLF, then silence",
        raw: Raw::Lit(
            b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n",
        ),
        expect: Expect::BadBody(&[408]),
    },
    // ---- request line ----------------------------------------------------
    // A method is a case-sensitive token: `get` is a valid extension method
    // to hyper and is forwarded as such (nginx answers 400).
    case(
        "lowercase method `get` (a valid token, forwarded)",
        b"get /first HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::Forwarded { body_len: 0 },
    ),
    // Absolute form: the authority wins over Host (RFC 9112 3.2.2), and
    // no rule has evil.test: the default backend's 404.
    case(
        "absolute-form target naming another host than Host",
        b"GET http://evil.test/first HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::Refused(&[404]),
    ),
    case(
        "double space after the method `GET  /first`",
        b"GET  /first HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "tabs as request-line separators",
        b"GET\t/first\tHTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "HTTP/0.9 request line `GET /first`",
        b"GET /first\r\n\r\n",
        R400,
    ),
    case(
        "HTTP/2.0 in an HTTP/1 request line",
        b"GET /first HTTP/2.0\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "unknown version HTTP/1.2",
        b"GET /first HTTP/1.2\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "trailing space after the version",
        b"GET /first HTTP/1.1 \r\nHost: a.test\r\n\r\n",
        R400,
    ),
    // RFC 9112 2.2: a recipient MAY take a bare LF as a line terminator;
    // hyper (and nginx) do.
    case(
        "bare LF line endings (valid, forwarded)",
        b"GET /first HTTP/1.1\nHost: a.test\n\n",
        Expect::Forwarded { body_len: 0 },
    ),
    case(
        "bare CR inside the header section",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nX-A: 1\rX-B: 2\r\n\r\n",
        R400,
    ),
    case(
        "NUL byte in a header value",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nX-A: a\0b\r\n\r\n",
        R400,
    ),
    case(
        "NUL byte in a header name",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nX-\0A: 1\r\n\r\n",
        R400,
    ),
    case(
        "header name with a space",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nBad Name: 1\r\n\r\n",
        R400,
    ),
    case(
        "header name with a byte over 0x7F",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nX-\xffA: 1\r\n\r\n",
        R400,
    ),
    case(
        "header line without a colon",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nX-No-Colon\r\n\r\n",
        R400,
    ),
    case(
        "header line with an empty name `: 1`",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\n: 1\r\n\r\n",
        R400,
    ),
    // obs-text (0x80-0xFF) is allowed in field values (RFC 9110 5.5).
    case(
        "bytes over 0x7F in a header value (obs-text, valid, forwarded)",
        b"GET /first HTTP/1.1\r\nHost: a.test\r\nX-A: caf\xe9 \xff\r\n\r\n",
        Expect::Forwarded { body_len: 0 },
    ),
    Case {
        attack: "101 header lines (max_headers is 100)",
        raw: Raw::Repeat {
            before: b"GET /first HTTP/1.1\r\nHost: a.test\r\n",
            unit: b"X-H: 1\r\n",
            times: 101,
            after: b"\r\n",
        },
        expect: Expect::Refused(&[400, 431]),
    },
    Case {
        attack: "very long method (40 KiB, over the 32 KiB head limit)",
        raw: Raw::Repeat {
            before: b"",
            unit: b"A",
            times: 40 * 1024,
            after: b" /first HTTP/1.1\r\nHost: a.test\r\n\r\n",
        },
        expect: Expect::Refused(&[400, 431, 501]),
    },
    // A 2 KiB extension method is still a token: forwarded.
    Case {
        attack: "long method (2 KiB, a valid token, forwarded)",
        raw: Raw::Repeat {
            before: b"",
            unit: b"A",
            times: 2 * 1024,
            after: b" /first HTTP/1.1\r\nHost: a.test\r\n\r\n",
        },
        expect: Expect::Forwarded { body_len: 0 },
    },
    // RFC 9112 3.2: a server MUST answer 400 to more than one Host line
    // (nginx: "client sent duplicate host header").
    Case {
        attack: "Host twice with different values",
        raw: Raw::Lit(b"GET /first HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n"),
        expect: Expect::Refused(&[400]),
    },
    case(
        "no Host on HTTP/1.1",
        b"GET /first HTTP/1.1\r\nX-A: 1\r\n\r\n",
        R400,
    ),
    // ---- request target --------------------------------------------------
    // `*` is only for OPTIONS; no rule matches it either way.
    Case {
        attack: "request target `*` with GET",
        raw: Raw::Lit(b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        expect: R400,
    },
    // An Ingress proxies resources, not tunnels: 405, as nginx answers.
    Case {
        attack: "CONNECT a.test:443",
        raw: Raw::Lit(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n"),
        expect: Expect::Refused(&[405]),
    },
    case(
        "path with `..` above the root",
        b"GET /../etc/passwd HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "percent-encoded `..` above the root",
        b"GET /first/%2e%2e/%2E%2E/etc/passwd HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    case(
        "bad percent escape `%zz`",
        b"GET /first%zz HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    // nginx refuses a decoded NUL in the path (400); a NUL can truncate
    // the path in a C backend after routing saw something else.
    Case {
        attack: "`%00` in the path",
        raw: Raw::Lit(b"GET /first%00.html HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        expect: Expect::Refused(&[400]),
    },
    case(
        "raw NUL byte in the path",
        b"GET /first\0 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        R400,
    ),
    // ingress-nginx's large-client-header-buffers (4 8k) make a request
    // line over 8 KiB a 414.
    Case {
        attack: "9 KiB URI",
        raw: Raw::Repeat {
            before: b"GET /first?",
            unit: b"a",
            times: 9 * 1024,
            after: b" HTTP/1.1\r\nHost: a.test\r\n\r\n",
        },
        expect: Expect::Refused(&[414]),
    },
    Case {
        attack: "40 KiB URI (over the 32 KiB head limit)",
        raw: Raw::Repeat {
            before: b"GET /first?",
            unit: b"a",
            times: 40 * 1024,
            after: b" HTTP/1.1\r\nHost: a.test\r\n\r\n",
        },
        expect: Expect::Refused(&[414, 431]),
    },
    // ---- not a request at all -------------------------------------------
    case(
        "only blank lines (hyper skips them, then times the head out)",
        b"\r\n\r\n\r\n\n\n",
        Expect::Silent,
    ),
    case(
        "partial request line, then silence",
        b"GET /fir",
        Expect::Silent,
    ),
    // hyper-util waits for more bytes to tell h1 from h2: the watchdog
    // must still close.
    case(
        "a prefix of the HTTP/2 preface, then silence",
        b"PRI * HTTP/2",
        Expect::Silent,
    ),
    case(
        "HTTP/2 prior-knowledge preface followed by garbage",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Expect::NotHttp1,
    ),
];

// ---------------------------------------------------------------------
// Harness: runtime, panic counting, proxy + backend.

const CORPUS_THREADS: &str = "bad-requests-corpus";
const FUZZ_THREADS: &str = "bad-requests-fuzz";

/// (thread name, message) of every panic on a runtime thread.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// A runtime whose threads are named `name`, with a panic hook that
/// records panics on them (tokio would otherwise swallow a panicking
/// connection task).
fn runtime(name: &'static str) -> tokio::runtime::Runtime {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(thread) = std::thread::current().name()
                && thread.starts_with("bad-requests-")
            {
                let mut panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
                panics.push((thread.to_string(), info.to_string()));
            }
            previous(info);
        }));
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn panics_on(name: &str) -> Vec<String> {
    PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(thread, _)| thread == name)
        .map(|(_, msg)| msg.clone())
        .collect()
}

struct Harness {
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    backend: Backend,
}

/// The proxy under test: `a.test/` to an echo backend, with short
/// timeouts so that a partial head or a never-ending body is answered or
/// closed quickly.
async fn harness(header_timeout: Duration, read_timeout: Duration) -> Harness {
    let backend = backend("b").await;
    let mut loc = location(
        "a.test",
        "/",
        upstream("b", &[backend.addr], BackendProtocol::Http),
    );
    loc.read_timeout = read_timeout;
    let settings = Settings {
        header_read_timeout: header_timeout,
        // Shorter than `read_timeout`: a stalled body is the client's
        // 408 before it can look like the upstream's 504.
        client_body_timeout: header_timeout,
        ..Settings::default()
    };
    let (proxy, addr) = start(routes(vec![loc]), settings).await;
    Harness {
        proxy,
        addr,
        backend,
    }
}

impl Harness {
    /// (requests, paths recorded) at the backend so far.
    fn mark(&self) -> (usize, usize) {
        (
            self.backend.seen.requests.load(Ordering::SeqCst),
            self.backend.seen.paths.lock().unwrap().len(),
        )
    }

    /// Requests and paths the backend saw since `mark`.
    fn since(&self, mark: (usize, usize)) -> (usize, Vec<String>) {
        let requests = self.backend.seen.requests.load(Ordering::SeqCst) - mark.0;
        let paths = self.backend.seen.paths.lock().unwrap()[mark.1..].to_vec();
        (requests, paths)
    }

    /// A fresh, ordinary request still gets 200 (within 5 s).
    async fn still_serves(&self) -> Result<(), String> {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            get(self.addr, "a.test", "/after", &[]),
        )
        .await;
        match got {
            Ok((status, _, _)) if status == http::StatusCode::OK => Ok(()),
            Ok((status, _, body)) => Err(format!(
                "a normal request afterwards got {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(_) => Err("a normal request afterwards got no answer in 5 s".into()),
        }
    }
}

// ---------------------------------------------------------------------
// Talking to the proxy.

/// What came back for one raw request.
struct Exchange {
    bytes: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    closed: bool,
    /// Neither closed nor a complete answer by the deadline.
    hung: bool,
}

/// Sends `request` on a new connection and reads the answer: until the
/// proxy closes, or until complete response(s) were followed by `quiet`
/// without more bytes (a keep-alive connection), or until `deadline`.
async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    deadline: Duration,
    quiet: Duration,
) -> Exchange {
    let end = Instant::now() + deadline;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before reading everything (431):
    // a failed write is part of the exchange, not an error.
    let _ = tokio::time::timeout_at(end, tcp.write_all(request)).await;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let settled =
            matches!(parse_responses(&bytes, false), Ok(p) if p.complete && !p.finals().is_empty());
        let until = if settled {
            (Instant::now() + quiet).min(end)
        } else {
            end
        };
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Exchange {
                    bytes,
                    closed: true,
                    hung: false,
                };
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Exchange {
                    bytes,
                    closed: false,
                    hung: !settled,
                };
            }
        }
    }
}

/// One HTTP/1.x response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Parsed {
    answers: Vec<Answer>,
    /// No bytes left over: the last response is whole.
    complete: bool,
}

impl Parsed {
    /// Final (non-1xx) responses.
    fn finals(&self) -> Vec<&Answer> {
        self.answers.iter().filter(|a| a.status >= 200).collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses `bytes` as consecutive HTTP/1.x responses; an error for anything
/// that is not one. `closed`: the connection ended after these bytes, so
/// a response framed by the close is complete.
fn parse_responses(bytes: &[u8], closed: bool) -> Result<Parsed, String> {
    let mut answers = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        // Whatever has arrived must be the start of a status line.
        let probe = &rest[..rest.len().min(9)];
        let ok = [&b"HTTP/1.1 "[..], &b"HTTP/1.0 "[..]]
            .iter()
            .any(|v| v.starts_with(probe));
        if !ok {
            return Err(format!(
                "not an HTTP/1.x status line: {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(80)])
            ));
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return Ok(Parsed {
                answers,
                complete: false,
            });
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let code = status_line.get(9..12).unwrap_or_default();
        let after = status_line.as_bytes().get(12);
        if code.len() != 3
            || !code.bytes().all(|b| b.is_ascii_digit())
            || !matches!(after, None | Some(b' '))
        {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = code.parse().map_err(|e| format!("{e}"))?;
        let mut headers = Vec::new();
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            if k.is_empty() || k.bytes().any(|b| b <= b' ') {
                return Err(format!("bad header name {k:?}"));
            }
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        let body = &rest[head_end + 4..];
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let used = if status < 200 || status == 204 || status == 304 {
            0
        } else if chunked {
            match dechunk(body)? {
                Some((data, used)) => {
                    answer.body = data;
                    used
                }
                None => {
                    return Ok(Parsed {
                        answers,
                        complete: false,
                    });
                }
            }
        } else if let Some(len) = answer.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length {len:?}"))?;
            if body.len() < len {
                return Ok(Parsed {
                    answers,
                    complete: false,
                });
            }
            answer.body = body[..len].to_vec();
            len
        } else if closed {
            answer.body = body.to_vec();
            body.len()
        } else {
            return Ok(Parsed {
                answers,
                complete: false,
            });
        };
        answers.push(answer);
        rest = &body[used..];
    }
    Ok(Parsed {
        answers,
        complete: true,
    })
}

/// A chunked body: `Some((data, bytes used))`, `None` if incomplete.
fn dechunk(mut body: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let total = body.len();
    let mut data = Vec::new();
    loop {
        let Some(eol) = find(body, b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&body[..eol]).into_owned();
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk {line:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(eol) = find(body, b"\r\n") else {
                    return Ok(None);
                };
                body = &body[eol + 2..];
                if eol == 0 {
                    return Ok(Some((data, total - body.len())));
                }
            }
        }
        if body.len() < size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&body[..size]);
        if &body[size..size + 2] != b"\r\n" {
            return Err("chunk without its CRLF".into());
        }
        body = &body[size + 2..];
    }
}

// ---------------------------------------------------------------------
// The corpus run.

const DEADLINE: Duration = Duration::from_secs(6);
const QUIET: Duration = Duration::from_millis(300);

/// Runs one corpus case; `Err` lists what went wrong. The status of the
/// first final response (if any) is returned for the report.
async fn run_case(h: &Harness, case: &Case) -> Result<Option<u16>, String> {
    let mark = h.mark();
    let ex = exchange(h.addr, &case.raw.bytes(), DEADLINE, QUIET).await;
    // A backend request whose body then failed may land a moment after
    // the client's answer.
    let settle = match case.expect {
        Expect::BadBody(_) => 500,
        _ => 150,
    };
    tokio::time::sleep(Duration::from_millis(settle)).await;
    let (requests, paths) = h.since(mark);
    let mut errors = Vec::new();
    let shown = String::from_utf8_lossy(&ex.bytes[..ex.bytes.len().min(300)]).into_owned();

    if ex.hung {
        errors.push(format!(
            "no complete answer and no close within {DEADLINE:?}: {shown:?}"
        ));
    }
    if paths.iter().any(|p| p.contains("smuggled")) {
        errors.push(format!("SMUGGLED request reached the backend: {paths:?}"));
    }
    if requests > 1 {
        errors.push(format!("the backend saw {requests} requests: {paths:?}"));
    }
    let parsed = match case.expect {
        Expect::NotHttp1 => None,
        _ => match parse_responses(&ex.bytes, ex.closed) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(format!("answer is not HTTP/1.x ({e}): {shown:?}"));
                None
            }
        },
    };
    let finals = parsed.as_ref().map(|p| p.finals()).unwrap_or_default();
    if finals.len() > 1 {
        let statuses: Vec<u16> = finals.iter().map(|a| a.status).collect();
        errors.push(format!("more than one response {statuses:?}: {shown:?}"));
    }
    let first = finals.first().copied();
    let status = first.map(|a| a.status);
    let echo = |a: &Answer| serde_json::from_slice::<serde_json::Value>(&a.body).ok();

    match case.expect {
        Expect::Refused(codes) => {
            match status {
                Some(s) if codes.contains(&s) => {
                    if matches!(s, 400 | 413 | 414 | 431) && !ex.closed {
                        errors.push(format!("{s} but the connection stayed open"));
                    }
                }
                _ => errors.push(format!("want one of {codes:?}, got {status:?}: {shown:?}")),
            }
            if requests != 0 {
                errors.push(format!("refused, yet the backend saw {paths:?}"));
            }
        }
        Expect::Chunked { body_len } | Expect::Forwarded { body_len } => {
            if status != Some(200) {
                errors.push(format!("want 200, got {status:?}: {shown:?}"));
            }
            if paths != ["/first"] {
                errors.push(format!(
                    "want the backend to see [/first], it saw {paths:?}"
                ));
            }
            match first.and_then(echo) {
                Some(json) => {
                    if json["body_len"] != body_len {
                        errors.push(format!("want a {body_len}-byte body upstream: {json}"));
                    }
                    if let Some(cl) = json["headers"]["content-length"].as_str()
                        && cl != body_len.to_string()
                    {
                        errors.push(format!("Content-Length {cl} upstream: {json}"));
                    }
                }
                None if status == Some(200) => {
                    errors.push(format!("200 without the backend's echo: {shown:?}"));
                }
                None => {}
            }
            if matches!(case.expect, Expect::Chunked { .. }) && !ex.closed {
                errors.push("TE+CL: the connection stayed open after the response".into());
            }
        }
        Expect::BadBody(codes) => {
            if let Some(s) = status
                && !codes.contains(&s)
            {
                errors.push(format!(
                    "want one of {codes:?} (or a close), got {s}: {shown:?}"
                ));
            }
            if status.is_none() && !ex.closed {
                errors.push("no answer, and the connection stayed open".into());
            }
            if paths.iter().any(|p| p != "/first") {
                errors.push(format!("the backend saw {paths:?}"));
            }
        }
        Expect::Silent => {
            if !ex.bytes.is_empty() || !ex.closed {
                errors.push(format!(
                    "want a silent close, got closed={} {shown:?}",
                    ex.closed
                ));
            }
            if requests != 0 {
                errors.push(format!("the backend saw {paths:?}"));
            }
        }
        Expect::NotHttp1 => {
            if ex.bytes.starts_with(b"HTTP/") {
                errors.push(format!("an HTTP/1 answer: {shown:?}"));
            }
            if !ex.closed {
                errors.push("the connection stayed open".into());
            }
            if requests != 0 {
                errors.push(format!("the backend saw {paths:?}"));
            }
        }
    }
    if let Err(e) = h.still_serves().await {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(status)
    } else {
        Err(errors.join("\n    "))
    }
}

fn run_corpus() {
    let rt = runtime(CORPUS_THREADS);
    rt.block_on(async {
        let h = harness(Duration::from_secs(1), Duration::from_secs(2)).await;
        let mut failures = Vec::new();
        for (i, case) in CORPUS.iter().enumerate() {
            let result = run_case(&h, case).await;
            let panics = panics_on(CORPUS_THREADS);
            let got = match &result {
                Ok(Some(s)) => s.to_string(),
                Ok(None) => "-".into(),
                Err(_) => "FAIL".into(),
            };
            eprintln!("[{i:2}] {got:>4}  {}", case.attack);
            if let Err(e) = result {
                failures.push(format!("[{i}] {}:\n    {e}", case.attack));
            }
            if !panics.is_empty() {
                failures.push(format!("[{i}] {}: PANIC {panics:?}", case.attack));
                PANICS.lock().unwrap().clear();
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} corpus cases failed:\n{}",
            failures.len(),
            CORPUS.len(),
            failures.join("\n")
        );
        assert_no_connections_left(&h.proxy).await;
    });
}

/// Every connection the proxy accepted ends once its client is gone (no
/// task is stuck).
async fn assert_no_connections_left(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still open 10 s after the last client left",
            proxy.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn corpus() {
    run_corpus();
}

// ---------------------------------------------------------------------
// The proptest.

/// Valid requests to mutate (some already ambiguous).
const SEEDS: &[&[u8]] = &[
    b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /first?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\
      Connection: close\r\n\r\n",
    b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\
      Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\
      \r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\
      \r\n28\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n\r\n0\r\n\r\n",
    b"GET /first HTTP/1.0\r\nHost: a.test\r\n\r\n",
    b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\nGET /second HTTP/1.1\r\nHost: a.test\r\n\
      Connection: close\r\n\r\n",
    b"PUT /first/a%20b HTTP/1.1\r\nHost: a.test:80\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
];

/// Inserted by mutations.
const INSERTS: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b":",
    b"\0",
    b" ",
    b"\t",
    b",",
    b";",
    b"\x7f",
    b"\xff",
    b"chunked",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Host: b.test\r\n",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"%00",
    b"/..",
    b"HTTP/1.1",
];

/// Grammar soup: requests assembled from HTTP-ish pieces.
const PIECES: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"get",
    b"CONNECT",
    b" ",
    b"  ",
    b"/",
    b"/first",
    b"*",
    b"http://a.test/",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: a.test",
    b"Host:",
    b"Content-Length: 5",
    b"Content-Length:",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding",
    b":",
    b" chunked",
    b"0",
    b"5",
    b"hello",
    b"\0",
    b"\t",
    b"\xff",
    b"Connection: close",
    b"0\r\n\r\n",
    b"-1",
    b",",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte with a nonzero mask.
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, &'static [u8]),
    Delete(Index, usize),
    Truncate(Index),
    /// Repeat a line (a header, usually).
    DuplicateLine(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), prop::sample::select(INSERTS)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        any::<Index>().prop_map(Mutation::DuplicateLine),
    ]
}

fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, mask) => {
                let i = i.index(b.len());
                b[i] ^= mask;
            }
            Mutation::Set(i, v) => {
                let i = i.index(b.len());
                b[i] = *v;
            }
            Mutation::Insert(i, s) => {
                let i = i.index(b.len() + 1);
                b.splice(i..i, s.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = i.index(b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate(i) => {
                let i = i.index(b.len());
                b.truncate(i);
            }
            Mutation::DuplicateLine(i) => {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain(
                        b.iter()
                            .enumerate()
                            .filter(|(_, c)| **c == b'\n')
                            .map(|(j, _)| j + 1),
                    )
                    .filter(|j| *j < b.len())
                    .collect();
                let start = starts[i.index(starts.len())];
                let end = b[start..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |p| start + p + 1);
                let line = b[start..end].to_vec();
                b.splice(end..end, line);
            }
        }
    }
    b
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (
            prop::sample::select(SEEDS),
            prop::collection::vec(mutation(), 1..4)
        )
            .prop_map(|(seed, ms)| mutate(seed, &ms)),
        2 => (
            prop::collection::vec(prop::sample::select(PIECES), 1..24),
            any::<bool>()
        )
            .prop_map(|(pieces, end)| {
                let mut b = pieces.concat();
                if end {
                    b.extend_from_slice(b"\r\n\r\n");
                }
                b
            }),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Whether the first request head in `input` has both a Content-Length
/// and a Transfer-Encoding line (as hyper would read them: name, colon).
fn ambiguous(input: &[u8]) -> bool {
    let end = [find(input, b"\n\n"), find(input, b"\n\r\n")]
        .into_iter()
        .flatten()
        .min();
    let Some(end) = end else { return false };
    let head = &input[..end];
    let mut cl = false;
    let mut te = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.to_ascii_lowercase();
        cl |= line.starts_with(b"content-length:");
        te |= line.starts_with(b"transfer-encoding:");
    }
    cl && te
}

const FUZZ_DEADLINE: Duration = Duration::from_secs(5);
const FUZZ_QUIET: Duration = Duration::from_millis(150);

/// Checks one input; `Ok` carries a one-word outcome for the tally.
async fn fuzz_case(h: &Harness, input: &[u8]) -> Result<String, String> {
    let ex = exchange(h.addr, input, FUZZ_DEADLINE, FUZZ_QUIET).await;
    let shown = String::from_utf8_lossy(&ex.bytes[..ex.bytes.len().min(300)]).into_owned();
    if ex.hung {
        return Err(format!(
            "neither an answer nor a close within {FUZZ_DEADLINE:?}: {shown:?}"
        ));
    }
    let parsed = parse_responses(&ex.bytes, ex.closed)
        .map_err(|e| format!("answer is not HTTP/1.x ({e}): {shown:?}"))?;
    if !parsed.complete {
        return Err(format!("a truncated response: {shown:?}"));
    }
    if ambiguous(input) {
        let finals = parsed.finals().len();
        if finals > 1 || !ex.closed {
            return Err(format!(
                "CL+TE: {finals} responses, closed={}: {shown:?}",
                ex.closed
            ));
        }
    }
    let panics = panics_on(FUZZ_THREADS);
    if !panics.is_empty() {
        return Err(format!("PANIC in the proxy: {panics:?}"));
    }
    h.still_serves().await?;
    let statuses: Vec<String> = parsed
        .finals()
        .iter()
        .map(|a| a.status.to_string())
        .collect();
    Ok(match (statuses.is_empty(), ex.closed) {
        (true, true) => "closed silently".into(),
        (true, false) => "no answer yet".into(),
        (false, _) => statuses.join("+"),
    })
}

#[test]
fn mutated_requests_never_crash_or_hang() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = runtime(FUZZ_THREADS);
    let h = rt.block_on(harness(Duration::from_millis(500), Duration::from_secs(1)));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        max_shrink_time: 60_000,
        ..Config::default()
    });
    let tally = Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let result = runner.run(&input(), |input| {
        let outcome = rt.block_on(fuzz_case(&h, &input)).map_err(|e| {
            TestCaseError::fail(format!("{e}\n  input: b\"{}\"", input.escape_ascii()))
        })?;
        *tally.lock().unwrap().entry(outcome).or_default() += 1;
        Ok(())
    });
    eprintln!("outcomes: {:?}", tally.lock().unwrap());
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(assert_no_connections_left(&h.proxy));
}
