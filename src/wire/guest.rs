//! The guest channel protocol (spec server §4–§5, guest-side §4): one compact
//! JSON object per line, written as `"\n" + json + "\n"`.
//!
//! Decoding runs on the per-socket reader threads (guestServer) and the
//! guest-client's channel thread; encoding runs on the dispatchers. Decoding
//! follows the original's accept step: a line that is not JSON (or holds NUL
//! bytes / invalid UTF-8) is malformed and dropped without a nack; a JSON value
//! with a bad header or a bad field is answered with the exact nack text of
//! spec §5.3. Every integer field must be a non-negative integer that fits in
//! 32 bits (decisions §5): strings, booleans, fractions and negatives fail.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::vocab::{EventType, NotificationType};

/// Protocol version we send and the lowest we accept.
pub const VERSION: u32 = 3;
/// Protocol revision we send.
pub const REVISION: u32 = 1;

/// `init` (guest → host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    pub invocation_id: u32,
    pub name: String,
    pub heartbeat_interval_ms: u32,
    pub vote_secs: u32,
    pub shutdown_notice_secs: u32,
    pub suspend_notice_secs: u32,
    pub resume_notice_secs: u32,
    pub restart_secs: u32,
    pub corrective_action: String,
}

/// `challenge_response` (guest → host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    pub heartbeat_response: u32,
    pub heartbeat_health: String,
    pub corrective_action: String,
    pub log_msg: String,
}

/// `action_response` (guest → host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResponse {
    pub invocation_id: u32,
    pub event_type: String,
    pub notification_type: String,
    pub vote_result: String,
    pub log_msg: String,
}

/// `exit` (guest → host). The server does not parse its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub log_msg: String,
}

/// `init_ack` (host → guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitAck {
    pub invocation_id: u32,
}

/// `challenge` (host → guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub heartbeat_challenge: u32,
}

/// `action_notify` (host → guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionNotify {
    pub invocation_id: u32,
    pub event_type: EventType,
    pub notification_type: NotificationType,
    pub timeout_ms: u32,
}

/// `nack` (host → guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub invocation_id: u32,
    pub log_msg: String,
}

/// A message a guest sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMsg {
    Init(Init),
    ChallengeResponse(ChallengeResponse),
    ActionResponse(ActionResponse),
    Exit(Exit),
}

/// A message the host sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMsg {
    InitAck(InitAck),
    Challenge(Challenge),
    ActionNotify(ActionNotify),
    Nack(Nack),
}

/// The common header of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub revision: u32,
    pub sequence: u32,
}

/// What became of one received line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<M> {
    /// A well-formed message.
    Msg(Header, M),
    /// A JSON object the peer should be told about: the nack text (spec §5.3).
    Nack(String),
    /// Not a JSON object we can trust (not JSON, NUL bytes, invalid UTF-8,
    /// `null`): dropped and counted, never answered.
    Malformed(&'static str),
}

/// Encodes `msg` as one line `"\n" + json + "\n"` with our header.
pub fn encode_host(sequence: u32, msg: &HostMsg) -> Vec<u8> {
    match msg {
        HostMsg::InitAck(b) => frame("init_ack", sequence, b),
        HostMsg::Challenge(b) => challenge_frame(sequence, b.heartbeat_challenge),
        HostMsg::ActionNotify(b) => frame("action_notify", sequence, b),
        HostMsg::Nack(b) => frame("nack", sequence, b),
    }
}

/// Encodes a guest message the way the reference guest-client does.
pub fn encode_guest(sequence: u32, msg: &GuestMsg) -> Vec<u8> {
    match msg {
        GuestMsg::Init(b) => frame("init", sequence, b),
        GuestMsg::ChallengeResponse(b) => frame("challenge_response", sequence, b),
        GuestMsg::ActionResponse(b) => frame("action_response", sequence, b),
        GuestMsg::Exit(b) => frame("exit", sequence, b),
    }
}

#[derive(Serialize)]
struct Framed<'a, T: Serialize> {
    version: u32,
    revision: u32,
    msg_type: &'a str,
    sequence: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// The hot path of `encode_host`: the same bytes as `frame("challenge", ..)`
/// without `#[serde(flatten)]`, which serialises through a map and cost a
/// third of the dispatcher's user time per round (callgrind).
fn challenge_frame(sequence: u32, heartbeat_challenge: u32) -> Vec<u8> {
    #[derive(Serialize)]
    struct FramedChallenge {
        version: u32,
        revision: u32,
        msg_type: &'static str,
        sequence: u32,
        heartbeat_challenge: u32,
    }
    let framed =
        FramedChallenge { version: VERSION, revision: REVISION, msg_type: "challenge", sequence, heartbeat_challenge };
    let mut out = Vec::with_capacity(128);
    out.push(b'\n');
    if serde_json::to_writer(&mut out, &framed).is_err() {
        out.truncate(1);
    }
    out.push(b'\n');
    out
}

fn frame<T: Serialize>(msg_type: &str, sequence: u32, body: &T) -> Vec<u8> {
    let framed = Framed { version: VERSION, revision: REVISION, msg_type, sequence, body };
    let mut out = Vec::with_capacity(256);
    out.push(b'\n');
    // Serialising these plain structs of strings and integers into a Vec
    // cannot fail; should it ever, an empty line is sent, which every peer
    // skips, rather than a partial object.
    if serde_json::to_writer(&mut out, &framed).is_err() {
        out.truncate(1);
    }
    out.push(b'\n');
    out
}

/// Decodes one line (without its newlines) received from a guest.
pub fn decode_guest(line: &[u8]) -> Decoded<GuestMsg> {
    if let Some(fast) = fast_challenge_response(line) {
        return fast;
    }
    decode_guest_general(line)
}

/// The hot path: a well-formed `challenge_response`, every few hundred
/// milliseconds from every guest. Decoding it straight into a struct costs
/// about a fifth of going through a `Value` map (callgrind, docs/PERFORMANCE.md).
/// It only ever answers `Some` where the general decoder would give the very
/// same message; anything unusual (an error of any kind, duplicate keys, an
/// old version, another type) returns `None` and takes the general path,
/// which produces the exact nack texts.
fn fast_challenge_response(line: &[u8]) -> Option<Decoded<GuestMsg>> {
    #[derive(Deserialize)]
    struct Fast<'a> {
        version: u32,
        revision: u32,
        #[serde(borrow)]
        msg_type: std::borrow::Cow<'a, str>,
        sequence: u32,
        heartbeat_response: u32,
        heartbeat_health: String,
        corrective_action: String,
        log_msg: String,
    }
    if line.contains(&0) {
        return None;
    }
    let f: Fast<'_> = serde_json::from_slice(line).ok()?;
    if f.version < VERSION || f.msg_type != "challenge_response" {
        return None;
    }
    Some(Decoded::Msg(
        Header { version: f.version, revision: f.revision, sequence: f.sequence },
        GuestMsg::ChallengeResponse(ChallengeResponse {
            heartbeat_response: f.heartbeat_response,
            heartbeat_health: f.heartbeat_health,
            corrective_action: f.corrective_action,
            log_msg: f.log_msg,
        }),
    ))
}

/// Every message, every error: the original's accept step and parse order.
fn decode_guest_general(line: &[u8]) -> Decoded<GuestMsg> {
    let (header, msg_type, m) = match header(line) {
        Ok(h) => h,
        Err(d) => return d,
    };
    let msg = match msg_type.as_str() {
        "init" => init(&m),
        "challenge_response" => challenge_response(&m),
        "action_response" => action_response(&m),
        // The server does not parse the body of `exit` (spec §5.3).
        "exit" => Ok(GuestMsg::Exit(Exit { log_msg: field(&m, "log_msg").unwrap_or_default() })),
        other => Err(format!("unsupported message type: {other}")),
    };
    match msg {
        Ok(msg) => Decoded::Msg(header, msg),
        Err(nack) => Decoded::Nack(nack),
    }
}

/// Decodes one line received from the host. The reference guest drops any
/// message whose version is not exactly 3 without answering; the caller
/// decides what to do with a `Nack` result (the guest only logs it).
pub fn decode_host(line: &[u8]) -> Decoded<HostMsg> {
    let (header, msg_type, m) = match header(line) {
        Ok(h) => h,
        Err(d) => return d,
    };
    let msg = match msg_type.as_str() {
        "init_ack" => field(&m, "invocation_id").map(|invocation_id| HostMsg::InitAck(InitAck { invocation_id })),
        "challenge" => field(&m, "heartbeat_challenge")
            .map(|heartbeat_challenge| HostMsg::Challenge(Challenge { heartbeat_challenge })),
        "action_notify" => action_notify(&m),
        "nack" => field(&m, "log_msg")
            .map(|log_msg| HostMsg::Nack(Nack { invocation_id: field(&m, "invocation_id").unwrap_or(0), log_msg })),
        other => Err(format!("unsupported message type: {other}")),
    };
    match msg {
        Ok(msg) => Decoded::Msg(header, msg),
        Err(nack) => Decoded::Nack(nack),
    }
}

type Fields = Map<String, Value>;

// The field order below is the original's parse order, so a nack names the
// same key the C++ daemon would.
fn init(m: &Fields) -> Result<GuestMsg, String> {
    Ok(GuestMsg::Init(Init {
        invocation_id: field(m, "invocation_id")?,
        name: field(m, "name")?,
        corrective_action: field(m, "corrective_action")?,
        heartbeat_interval_ms: field(m, "heartbeat_interval_ms")?,
        vote_secs: field(m, "vote_secs")?,
        shutdown_notice_secs: field(m, "shutdown_notice_secs")?,
        suspend_notice_secs: field(m, "suspend_notice_secs")?,
        resume_notice_secs: field(m, "resume_notice_secs")?,
        restart_secs: field(m, "restart_secs")?,
    }))
}

fn challenge_response(m: &Fields) -> Result<GuestMsg, String> {
    Ok(GuestMsg::ChallengeResponse(ChallengeResponse {
        heartbeat_response: field(m, "heartbeat_response")?,
        heartbeat_health: field(m, "heartbeat_health")?,
        corrective_action: field(m, "corrective_action")?,
        log_msg: field(m, "log_msg")?,
    }))
}

fn action_response(m: &Fields) -> Result<GuestMsg, String> {
    Ok(GuestMsg::ActionResponse(ActionResponse {
        invocation_id: field(m, "invocation_id")?,
        event_type: field(m, "event_type")?,
        notification_type: field(m, "notification_type")?,
        vote_result: field(m, "vote_result")?,
        log_msg: field(m, "log_msg")?,
    }))
}

fn action_notify(m: &Fields) -> Result<HostMsg, String> {
    Ok(HostMsg::ActionNotify(ActionNotify {
        invocation_id: field(m, "invocation_id")?,
        event_type: field(m, "event_type")?,
        notification_type: field(m, "notification_type")?,
        timeout_ms: field(m, "timeout_ms")?,
    }))
}

type HeaderParts = (Header, String, Fields);

/// The accept step of spec §4.4 plus the header re-read of §5.2.
fn header<M>(line: &[u8]) -> Result<HeaderParts, Decoded<M>> {
    if line.contains(&0) {
        return Err(Decoded::Malformed("NUL byte in line"));
    }
    // Checked before parsing: serde_json recurses per level, and decoding
    // runs on reader threads with deliberately small stacks.
    if nesting_exceeds(line, MAX_DEPTH) {
        return Err(Decoded::Malformed("JSON nested too deeply"));
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) if e.is_data() || e.is_syntax() || e.is_eof() => {
            return Err(Decoded::Malformed("not JSON"));
        }
        Err(_) => return Err(Decoded::Malformed("unreadable line")),
    };
    let map = match value {
        Value::Null => return Err(Decoded::Malformed("JSON null")),
        Value::Object(map) => map,
        // A non-object value fails the version lookup, as in the original.
        _ => return Err(Decoded::Nack(parse_failed("version"))),
    };
    let version: u32 = field(&map, "version").map_err(Decoded::Nack)?;
    if version < VERSION {
        return Err(Decoded::Nack(format!("Bad version: {version}, expect version: {VERSION}")));
    }
    let revision: u32 = field(&map, "revision").map_err(Decoded::Nack)?;
    let msg_type: String = field(&map, "msg_type").map_err(Decoded::Nack)?;
    let sequence: u32 = field(&map, "sequence").map_err(Decoded::Nack)?;
    Ok((Header { version, revision, sequence }, msg_type, map))
}

/// Deepest JSON nesting accepted from a guest. Every protocol message is
/// a flat object (depth 1); anything deeper than this is hostile.
pub const MAX_DEPTH: usize = 16;

/// Whether `line` opens more than `max` nested arrays/objects (outside
/// strings). A linear scan with no recursion.
pub fn nesting_exceeds(line: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in line {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Reads one key as `T` through serde; any failure is the nack text
/// `failed to parse <key>`.
fn field<T: DeserializeOwned>(map: &Fields, key: &str) -> Result<T, String> {
    let v = map.get(key).ok_or_else(|| parse_failed(key))?;
    T::deserialize(v).map_err(|_| parse_failed(key))
}

fn parse_failed(key: &str) -> String {
    format!("failed to parse {key}")
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
