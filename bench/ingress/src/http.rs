//! A minimal blocking HTTP/1.1 client over one keep-alive connection:
//! enough to ask "does this host and path answer 200 yet?" quickly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    /// Status code of `GET path` with `Host: host` (one reconnect on a
    /// dead keep-alive connection).
    pub fn status(&mut self, host: &str, path: &str) -> anyhow::Result<u16> {
        match self.try_status(host, path) {
            Ok(s) => Ok(s),
            Err(_) => {
                self.conn = None;
                self.try_status(host, path)
            }
        }
    }

    fn try_status(&mut self, host: &str, path: &str) -> anyhow::Result<u16> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no connection"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench\r\n\r\n");
        conn.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            anyhow::bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?
            .parse()?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                anyhow::bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "content-length" => length = v.parse().ok(),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
                let mut skip = vec![0u8; size + 2];
                conn.read_exact(&mut skip)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            let mut skip = vec![0u8; n];
            conn.read_exact(&mut skip)?;
        } else {
            close = true;
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        }
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}
