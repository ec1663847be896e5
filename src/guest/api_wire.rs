//! The application API's binary frames (spec guest-side §8.2–§8.3): every
//! message is exactly 228 bytes, native byte order, magic `FDFDA5A5`,
//! version 2, so apps linked against the C library keep working (K6).
//!
//! Pure; used by the daemon's app reader threads (decode), its dispatcher
//! (encode) and the Rust client library in `api`.

use crate::wire::vocab::{CorrectiveAction, EventType, NotificationType, VoteResult};

pub const FRAME_LEN: usize = 228;
pub const MAGIC: &[u8; 8] = b"FDFDA5A5";
pub const VERSION: u8 = 2;
pub const REVISION: u8 = 1;
/// Default API socket path.
pub const DEFAULT_SOCKET: &str = "/var/run/.guest_heartbeat_api";
/// Size of a name field (NUL included).
const NAME_LEN: usize = 40;
/// Size of a log field (NUL included).
const LOG_LEN: usize = 192;
/// Reassembly buffer size; a full buffer is emptied.
const STREAM_BUF: usize = 8192;

/// An app's registration (message type 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInit {
    pub name: String,
    pub heartbeat_interval_ms: u32,
    pub vote_secs: u32,
    pub shutdown_notice_secs: u32,
    pub suspend_notice_secs: u32,
    pub resume_notice_secs: u32,
    pub corrective_action: CorrectiveAction,
}

/// One API message, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiMsg {
    Init(AppInit),
    InitAck { accepted: bool },
    Final { log_msg: String },
    Challenge { value: u32 },
    ChallengeResponse { value: u32, healthy: bool, action: CorrectiveAction, log_msg: String },
    ActionNotify { invocation_id: u32, event: EventType, notify: NotificationType },
    ActionResponse { invocation_id: u32, event: EventType, notify: NotificationType, vote: VoteResult, log_msg: String },
}

fn action_code(a: CorrectiveAction) -> u32 {
    match a {
        CorrectiveAction::Unknown => 0,
        CorrectiveAction::None => 1,
        CorrectiveAction::Reboot => 2,
        CorrectiveAction::Stop => 3,
        CorrectiveAction::Log => 4,
    }
}

fn action_of(c: u32) -> CorrectiveAction {
    match c {
        1 => CorrectiveAction::None,
        2 => CorrectiveAction::Reboot,
        3 => CorrectiveAction::Stop,
        4 => CorrectiveAction::Log,
        _ => CorrectiveAction::Unknown,
    }
}

const EVENTS: [EventType; 12] = [
    EventType::Stop,
    EventType::Reboot,
    EventType::Suspend,
    EventType::Pause,
    EventType::Unpause,
    EventType::Resume,
    EventType::ResizeBegin,
    EventType::ResizeEnd,
    EventType::LiveMigrateBegin,
    EventType::LiveMigrateEnd,
    EventType::ColdMigrateBegin,
    EventType::ColdMigrateEnd,
];

fn event_code(e: EventType) -> u32 {
    EVENTS.iter().position(|x| *x == e).map_or(0, |i| i as u32 + 1)
}

fn event_of(c: u32) -> EventType {
    (c as usize).checked_sub(1).and_then(|i| EVENTS.get(i).copied()).unwrap_or(EventType::Unknown)
}

fn notify_code(n: NotificationType) -> u32 {
    match n {
        NotificationType::Unknown => 0,
        NotificationType::Revocable => 1,
        NotificationType::Irrevocable => 2,
    }
}

fn notify_of(c: u32) -> NotificationType {
    match c {
        1 => NotificationType::Revocable,
        2 => NotificationType::Irrevocable,
        _ => NotificationType::Unknown,
    }
}

fn vote_code(v: VoteResult) -> u32 {
    match v {
        VoteResult::Accept => 1,
        VoteResult::Reject => 2,
        VoteResult::Complete => 3,
        _ => 0,
    }
}

fn vote_of(c: u32) -> VoteResult {
    match c {
        1 => VoteResult::Accept,
        2 => VoteResult::Reject,
        3 => VoteResult::Complete,
        _ => VoteResult::Unknown,
    }
}

struct Writer([u8; FRAME_LEN]);

impl Writer {
    fn u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    /// A NUL-padded string, cut to the field size minus 1 at a char boundary.
    fn str(&mut self, at: usize, size: usize, s: &str) {
        let mut end = s.len().min(size - 1);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0[at..at + end].copy_from_slice(&s.as_bytes()[..end]);
    }
}

fn u32_at(f: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&f[at..at + 4]);
    u32::from_ne_bytes(b)
}

fn str_at(f: &[u8], at: usize, size: usize) -> String {
    let field = &f[at..at + size];
    let end = field.iter().position(|b| *b == 0).unwrap_or(size);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Encodes one frame with the sender's `sequence`.
pub fn encode(sequence: u32, msg: &ApiMsg) -> [u8; FRAME_LEN] {
    let mut w = Writer([0u8; FRAME_LEN]);
    w.0[..8].copy_from_slice(MAGIC);
    w.0[8] = VERSION;
    w.0[9] = REVISION;
    let ty: u16 = match msg {
        ApiMsg::Init(i) => {
            w.str(20, NAME_LEN, &i.name);
            w.u32(60, i.heartbeat_interval_ms);
            w.u32(64, i.vote_secs);
            w.u32(68, i.shutdown_notice_secs);
            w.u32(72, i.suspend_notice_secs);
            w.u32(76, i.resume_notice_secs);
            w.u32(80, action_code(i.corrective_action));
            0
        }
        ApiMsg::InitAck { accepted } => {
            w.u32(20, u32::from(*accepted));
            1
        }
        ApiMsg::Final { log_msg } => {
            w.str(20, LOG_LEN, log_msg);
            2
        }
        ApiMsg::Challenge { value } => {
            w.u32(20, *value);
            3
        }
        ApiMsg::ChallengeResponse { value, healthy, action, log_msg } => {
            w.u32(20, *value);
            w.u32(24, u32::from(*healthy));
            w.u32(28, action_code(*action));
            w.str(32, LOG_LEN, log_msg);
            4
        }
        ApiMsg::ActionNotify { invocation_id, event, notify } => {
            w.u32(20, *invocation_id);
            w.u32(24, event_code(*event));
            w.u32(28, notify_code(*notify));
            5
        }
        ApiMsg::ActionResponse { invocation_id, event, notify, vote, log_msg } => {
            w.u32(20, *invocation_id);
            w.u32(24, event_code(*event));
            w.u32(28, notify_code(*notify));
            w.u32(32, vote_code(*vote));
            w.str(36, LOG_LEN, log_msg);
            6
        }
    };
    w.0[10..12].copy_from_slice(&ty.to_ne_bytes());
    w.u32(12, sequence);
    w.u32(16, FRAME_LEN as u32);
    w.0
}

/// Decodes one 228-byte frame whose magic and version were checked.
fn decode(f: &[u8]) -> Option<ApiMsg> {
    let ty = u16::from_ne_bytes([f[10], f[11]]);
    Some(match ty {
        0 => ApiMsg::Init(AppInit {
            name: str_at(f, 20, NAME_LEN),
            heartbeat_interval_ms: u32_at(f, 60),
            vote_secs: u32_at(f, 64),
            shutdown_notice_secs: u32_at(f, 68),
            suspend_notice_secs: u32_at(f, 72),
            resume_notice_secs: u32_at(f, 76),
            corrective_action: action_of(u32_at(f, 80)),
        }),
        1 => ApiMsg::InitAck { accepted: u32_at(f, 20) != 0 },
        2 => ApiMsg::Final { log_msg: str_at(f, 20, LOG_LEN) },
        3 => ApiMsg::Challenge { value: u32_at(f, 20) },
        4 => ApiMsg::ChallengeResponse {
            value: u32_at(f, 20),
            healthy: u32_at(f, 24) != 0,
            action: action_of(u32_at(f, 28)),
            log_msg: str_at(f, 32, LOG_LEN),
        },
        5 => ApiMsg::ActionNotify {
            invocation_id: u32_at(f, 20),
            event: event_of(u32_at(f, 24)),
            notify: notify_of(u32_at(f, 28)),
        },
        6 => ApiMsg::ActionResponse {
            invocation_id: u32_at(f, 20),
            event: event_of(u32_at(f, 24)),
            notify: notify_of(u32_at(f, 28)),
            vote: vote_of(u32_at(f, 32)),
            log_msg: str_at(f, 36, LOG_LEN),
        },
        _ => return None,
    })
}

/// Per-connection stream reassembly (fix Q9: not shared between apps).
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Vec<u8>,
}

impl Reassembler {
    /// Appends bytes and pushes every complete message found. Unknown
    /// message types are skipped.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<ApiMsg>) {
        self.buf.extend_from_slice(data);
        loop {
            let Some(start) = self.buf.windows(MAGIC.len()).position(|w| w == MAGIC) else {
                // Keep a possible partial magic at the end.
                let keep = self.buf.len().saturating_sub(MAGIC.len() - 1);
                self.buf.drain(..keep);
                break;
            };
            self.buf.drain(..start);
            if self.buf.len() < 10 {
                break;
            }
            if self.buf[8] != VERSION {
                // Skip this magic and scan again.
                self.buf.drain(..1);
                continue;
            }
            if self.buf.len() < FRAME_LEN {
                break;
            }
            if let Some(m) = decode(&self.buf[..FRAME_LEN]) {
                out.push(m);
            }
            self.buf.drain(..FRAME_LEN);
        }
        if self.buf.len() >= STREAM_BUF {
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_c_header() {
        let f = encode(
            7,
            &ApiMsg::Init(AppInit {
                name: "sample-guest-app".into(),
                heartbeat_interval_ms: 1000,
                vote_secs: 8,
                shutdown_notice_secs: 5,
                suspend_notice_secs: 5,
                resume_notice_secs: 5,
                corrective_action: CorrectiveAction::Stop,
            }),
        );
        assert_eq!(f.len(), 228);
        assert_eq!(&f[..8], b"FDFDA5A5");
        assert_eq!((f[8], f[9]), (2, 1));
        assert_eq!(u16::from_ne_bytes([f[10], f[11]]), 0);
        assert_eq!(u32_at(&f, 12), 7);
        assert_eq!(u32_at(&f, 16), 228);
        assert_eq!(&f[20..36], b"sample-guest-app");
        assert_eq!(f[36], 0);
        assert_eq!(u32_at(&f, 60), 1000);
        assert_eq!(u32_at(&f, 80), 3);
        let f = encode(
            1,
            &ApiMsg::ActionResponse {
                invocation_id: 9,
                event: EventType::ColdMigrateEnd,
                notify: NotificationType::Irrevocable,
                vote: VoteResult::Complete,
                log_msg: "x".repeat(500),
            },
        );
        assert_eq!((u32_at(&f, 24), u32_at(&f, 28), u32_at(&f, 32)), (12, 2, 3));
        assert_eq!(str_at(&f, 36, 192).len(), 191);
    }

    #[test]
    fn reassembles_split_glued_and_garbage_streams() {
        let msgs = vec![
            ApiMsg::Challenge { value: 5 },
            ApiMsg::ChallengeResponse {
                value: 5,
                healthy: false,
                action: CorrectiveAction::Log,
                log_msg: "sick".into(),
            },
            ApiMsg::Final { log_msg: "bye".into() },
        ];
        let mut stream = b"junkFDFDA5A5\x09".to_vec(); // wrong version: skipped
        for (i, m) in msgs.iter().enumerate() {
            stream.extend_from_slice(&encode(i as u32 + 1, m));
        }
        let mut r = Reassembler::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(7) {
            r.push(chunk, &mut out);
        }
        assert_eq!(out, msgs);
    }
}
