//! Pure HTTP/1.x request-head checks for the HTTP gate (`http_gate`): finds
//! the end of a head, validates the request line, reads the framing headers
//! and builds the head that is relayed to rouille. Runs on the gate's
//! per-connection threads; no I/O here, so every refusal is unit-testable.
//!
//! The gate relays exactly one request per connection, so the relayed head
//! always says `Connection: close`; the hop-by-hop headers (`Connection`,
//! `Keep-Alive`, `Proxy-Connection`, `Expect`) are not relayed, since the gate
//! answers `Expect: 100-continue` itself.

/// Why a head is refused: the status code and a reason for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

pub const BAD_REQUEST_LINE: Refusal = Refusal { status: 400, reason: "malformed request line" };
pub const BAD_HEADER: Refusal = Refusal { status: 400, reason: "malformed header" };
pub const BAD_LENGTH: Refusal = Refusal { status: 400, reason: "invalid Content-Length" };
pub const CHUNKED: Refusal =
    Refusal { status: 411, reason: "a request body needs Content-Length (Transfer-Encoding is not accepted)" };
pub const TOO_LARGE: Refusal = Refusal { status: 413, reason: "request body too large" };
pub const HEAD_TOO_LARGE: Refusal = Refusal { status: 431, reason: "request head too large" };

/// A checked head, ready to relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of body that follow the head.
    pub content_length: usize,
    /// The client asked for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The head to send to rouille, ending in the blank line.
    pub relay: Vec<u8>,
}

/// Where the head ends: the index just past its blank line (`\r\n\r\n`).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Checks the head `raw` (up to and including its blank line).
pub fn parse(raw: &[u8], max_head: usize, max_body: usize) -> Result<Head, Refusal> {
    if raw.len() > max_head {
        return Err(HEAD_TOO_LARGE);
    }
    let text = raw.strip_suffix(b"\r\n\r\n").unwrap_or(raw);
    let mut lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    check_request_line(request_line)?;

    let mut relay = Vec::with_capacity(raw.len() + 20);
    relay.extend_from_slice(request_line);
    relay.extend_from_slice(b"\r\n");
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    for line in lines {
        let colon = line.iter().position(|&b| b == b':').ok_or(BAD_HEADER)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(BAD_HEADER);
        }
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(BAD_LENGTH);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(CHUNKED);
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            }
            continue;
        } else if name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"keep-alive")
            || name.eq_ignore_ascii_case(b"proxy-connection")
        {
            continue;
        }
        relay.extend_from_slice(line);
        relay.extend_from_slice(b"\r\n");
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > max_body {
        return Err(TOO_LARGE);
    }
    relay.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Head { content_length, expect_continue, relay })
}

/// Makes sure the answer relayed to the client says `Connection: close`
/// (the gate closes after one request; rouille only says so when the client
/// asked). An answer without a complete head is returned as it is.
pub fn close_answer(mut answer: Vec<u8>) -> Vec<u8> {
    let Some(end) = head_end(&answer) else {
        return answer;
    };
    let says_close =
        answer[..end].split(|&b| b == b'\n').any(|l| l.len() >= 11 && l[..11].eq_ignore_ascii_case(b"connection:"));
    if !says_close {
        let at = end - 2;
        answer.splice(at..at, b"Connection: close\r\n".iter().copied());
    }
    answer
}

/// `METHOD SP target SP HTTP/1.x`, visible ASCII only.
fn check_request_line(line: &[u8]) -> Result<(), Refusal> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_REQUEST_LINE);
    };
    let ok = !method.is_empty()
        && method.iter().all(|&b| is_token(b))
        && !target.is_empty()
        && target.iter().all(|&b| b.is_ascii_graphic())
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0");
    if ok {
        Ok(())
    } else {
        Err(BAD_REQUEST_LINE)
    }
}

fn parse_length(value: &[u8]) -> Result<usize, Refusal> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD_LENGTH);
    }
    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or(BAD_LENGTH)
}

/// RFC 9110 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |p| p + 1);
    &v[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX_HEAD: usize = 8192;
    const MAX_BODY: usize = 1000;

    fn p(raw: &str) -> Result<Head, Refusal> {
        parse(raw.as_bytes(), MAX_HEAD, MAX_BODY)
    }

    #[test]
    fn finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn relays_with_connection_close_and_without_hop_by_hop_headers() {
        let h = p("PUT /v1/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
                   Expect: 100-continue\r\nContent-Length:  12 \r\nUser-Agent: vim/1.0\r\n\r\n")
        .unwrap();
        assert_eq!(h.content_length, 12);
        assert!(h.expect_continue);
        assert_eq!(
            String::from_utf8(h.relay).unwrap(),
            "PUT /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\nUser-Agent: vim/1.0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn no_length_means_no_body() {
        let h = p("GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(h.content_length, 0);
        assert!(!h.expect_continue);
    }

    #[test]
    fn refusals() {
        assert_eq!(p("GET /\r\n\r\n"), Err(BAD_REQUEST_LINE));
        assert_eq!(p("GET  / HTTP/1.1\r\n\r\n"), Err(BAD_REQUEST_LINE));
        assert_eq!(p("GET / HTTP/2.0\r\n\r\n"), Err(BAD_REQUEST_LINE));
        assert_eq!(p("GET /\u{e9} HTTP/1.1\r\n\r\n"), Err(BAD_REQUEST_LINE));
        assert_eq!(p("GET / HTTP/1.1\r\nno colon\r\n\r\n"), Err(BAD_HEADER));
        assert_eq!(p("GET / HTTP/1.1\r\nbad name: x\r\n\r\n"), Err(BAD_HEADER));
        assert_eq!(p("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Err(BAD_LENGTH));
        assert_eq!(p("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Err(BAD_LENGTH));
        assert_eq!(p("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), Err(BAD_LENGTH));
        assert_eq!(p("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(CHUNKED));
        assert_eq!(p("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"), Err(TOO_LARGE));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(MAX_HEAD));
        assert_eq!(p(&long), Err(HEAD_TOO_LARGE));
        // Equal duplicates are allowed.
        assert_eq!(p("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n").unwrap().content_length, 3);
    }

    #[test]
    fn answers_are_made_to_close() {
        let a = close_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
        assert_eq!(a, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let b = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
        assert_eq!(close_answer(b.clone()), b);
        assert_eq!(close_answer(b"HTTP/1.1 2".to_vec()), b"HTTP/1.1 2");
    }

    proptest! {
        #[test]
        fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&raw, 512, 100);
            let _ = head_end(&raw);
        }

        #[test]
        fn valid_heads_relay_every_other_header(
            headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,30}"), 0..8),
            len in 0usize..1000,
        ) {
            let mut raw = String::from("POST /v1/hosts HTTP/1.1\r\n");
            let mut expect = raw.clone();
            for (name, value) in &headers {
                let lower = name.to_ascii_lowercase();
                if ["content-length", "transfer-encoding", "expect", "connection", "keep-alive", "proxy-connection"]
                    .contains(&lower.as_str())
                {
                    continue;
                }
                raw.push_str(&format!("{name}: {value}\r\n"));
                expect.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str(&format!("Content-Length: {len}\r\n\r\n"));
            expect.push_str(&format!("Content-Length: {len}\r\nConnection: close\r\n\r\n"));
            let h = parse(raw.as_bytes(), 8192, 1000).unwrap();
            prop_assert_eq!(h.content_length, len);
            prop_assert_eq!(String::from_utf8(h.relay).unwrap(), expect);
        }
    }
}
