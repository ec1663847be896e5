//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`, just enough
//! for the VIM's guest REST server: one request per connection with
//! `Connection: close`, the body read to EOF or to its Content-Length.
//!
//! Runs on the VIM sender threads only (never on the dispatcher). The
//! classification of outcomes for events follows decisions §guestAgent 4: once
//! the whole request was written, a close without any reply counts as
//! delivered, because the real VIM acts on the event and then closes.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

use super::outbox::Delivery;

/// Largest reply we read; the VIM's are a few hundred bytes.
const MAX_REPLY: usize = 1 << 20;

/// `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VimUrl {
    /// Host as written, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" normally).
    pub prefix: String,
}

impl VimUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("http://").ok_or_else(|| format!("{s:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
            None => 80,
        };
        Ok(Self { host: host.to_string(), port, prefix: path.trim_end_matches('/').to_string() })
    }

    /// The `Host:` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for VimUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// What came back once the request was fully written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status {
        code: u16,
        body: Vec<u8>,
    },
    /// The peer closed without sending a byte (the Python 3 VIM's habit).
    ClosedWithoutReply,
    /// Reading failed or timed out before a complete status line arrived.
    Broken(String),
}

/// The request never fully reached the VIM.
#[derive(Debug, Error)]
pub enum SendError {
    #[error("cannot resolve {0}")]
    Resolve(String, #[source] io::Error),
    #[error("cannot connect to {0}")]
    Connect(String, #[source] io::Error),
    #[error("request to {0} not fully written")]
    Write(String, #[source] io::Error),
}

/// Sends one request and reads the reply.
pub fn send(
    url: &VimUrl,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, SendError> {
    let target = url.authority();
    let addrs: Vec<_> =
        (url.host.as_str(), url.port).to_socket_addrs().map_err(|e| SendError::Resolve(target.clone(), e))?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| SendError::Connect(target.clone(), last))?;
    let write = |s: &mut TcpStream| -> io::Result<()> {
        s.set_write_timeout(Some(timeout))?;
        s.set_read_timeout(Some(timeout))?;
        let _ = s.set_nodelay(true);
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: guest-agent/1.0\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\n",
            url.prefix
        );
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body.unwrap_or_default());
        s.write_all(&req)?;
        s.flush()
    };
    write(&mut stream).map_err(|e| SendError::Write(target.clone(), e))?;
    Ok(read_reply(&mut stream))
}

fn read_reply(stream: &mut impl Read) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_REPLY || complete(&buf) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if buf.is_empty() {
                    return Reply::Broken(e.to_string());
                }
                break;
            }
        }
    }
    if buf.is_empty() {
        return Reply::ClosedWithoutReply;
    }
    parse_reply(&buf).unwrap_or_else(|| Reply::Broken("malformed status line".into()))
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
    })
}

/// True once headers and a Content-Length body have arrived.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = header_end(buf) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    content_length(&head).is_some_and(|n| buf.len() >= end + n)
}

/// Parses `HTTP/1.x CODE ...`, headers and the body.
pub fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let end = header_end(buf).unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.lines().next()?;
    let mut parts = status.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    let mut body = buf.get(end..).unwrap_or_default().to_vec();
    if let Some(n) = content_length(&head) {
        body.truncate(n);
    }
    Some(Reply::Status { code, body })
}

/// How an event PATCH ended (decisions §guestAgent 4).
pub fn classify_event(result: &Result<Reply, SendError>) -> Delivery {
    match result {
        Err(_) => Delivery::Retry,
        Ok(Reply::Status { code, .. }) if (200..300).contains(code) => Delivery::Delivered,
        Ok(Reply::Status { code, .. }) if *code >= 500 => Delivery::Retry,
        Ok(Reply::Status { .. }) => Delivery::Rejected,
        Ok(Reply::ClosedWithoutReply) | Ok(Reply::Broken(_)) => Delivery::Delivered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = VimUrl::parse("http://127.0.0.1:30002").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("127.0.0.1", 30002, ""));
        let u = VimUrl::parse("http://[::1]:5/x/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("::1", 5, "/x"));
        assert_eq!(u.authority(), "[::1]:5");
        assert_eq!(VimUrl::parse("http://h").unwrap().port, 80);
        assert!(VimUrl::parse("https://h").is_err());
        assert!(VimUrl::parse("http://h:x").is_err());
    }

    #[test]
    fn replies() {
        let r = parse_reply(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!(r, Reply::Status { code: 200, body: b"{}".to_vec() });
        let r = parse_reply(b"HTTP/1.0 400 Bad\r\n\r\nbody").unwrap();
        assert_eq!(r, Reply::Status { code: 400, body: b"body".to_vec() });
        assert_eq!(parse_reply(b"garbage"), None);
        assert_eq!(read_reply(&mut io::empty()), Reply::ClosedWithoutReply);
    }

    #[test]
    fn classification() {
        let st = |code| Ok(Reply::Status { code, body: vec![] });
        assert_eq!(classify_event(&st(204)), Delivery::Delivered);
        assert_eq!(classify_event(&st(503)), Delivery::Retry);
        assert_eq!(classify_event(&st(404)), Delivery::Rejected);
        assert_eq!(classify_event(&Ok(Reply::ClosedWithoutReply)), Delivery::Delivered);
        let refused = Err(SendError::Connect("x".into(), io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert_eq!(classify_event(&refused), Delivery::Retry);
    }
}
