//! The closed vocabularies of the guest protocol (spec server §5.1): event
//! types, notification types, vote results, health and corrective actions.
//!
//! Pure types; used by every thread that encodes or decodes.

use serde::{Deserialize, Serialize};

/// Declares a string-valued enum with `as_str`, `parse` (unknown strings map
/// to `Unknown`) and serde in the wire spelling.
macro_rules! vocab {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant,)+
            #[serde(other, rename = "unknown")]
            Unknown,
        }
        impl $name {
            /// Every variant but `Unknown`, in spec order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ $name::Unknown => "unknown" }
            }
            /// Parses the wire spelling; anything else is `Unknown`.
            pub fn parse(s: &str) -> Self {
                match s { $($text => $name::$variant,)+ _ => $name::Unknown }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocab!(
    /// `event_type` of `action_notify` / `action_response`.
    EventType {
        Stop => "stop",
        Reboot => "reboot",
        Suspend => "suspend",
        Pause => "pause",
        Unpause => "unpause",
        Resume => "resume",
        ResizeBegin => "resize_begin",
        ResizeEnd => "resize_end",
        LiveMigrateBegin => "live_migrate_begin",
        LiveMigrateEnd => "live_migrate_end",
        ColdMigrateBegin => "cold_migrate_begin",
        ColdMigrateEnd => "cold_migrate_end",
    }
);

vocab!(
    /// `notification_type`: a vote (revocable) or a notification (irrevocable).
    NotificationType {
        Revocable => "revocable",
        Irrevocable => "irrevocable",
    }
);

vocab!(
    /// `vote_result` of an `action_response`.
    VoteResult {
        Accept => "accept",
        Reject => "reject",
        Complete => "complete",
        Timeout => "timeout",
        Error => "error",
    }
);

vocab!(
    /// `corrective_action` a guest asks for.
    CorrectiveAction {
        None => "none",
        Reboot => "reboot",
        Stop => "stop",
        Log => "log",
    }
);

vocab!(
    /// `heartbeat_health` of a `challenge_response`.
    Health {
        Healthy => "healthy",
        Unhealthy => "unhealthy",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_spelling() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), *e);
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), *e);
        }
        for v in VoteResult::ALL {
            assert_eq!(VoteResult::parse(v.as_str()), *v);
        }
    }

    #[test]
    fn unknown_spellings_map_to_unknown() {
        assert_eq!(EventType::parse("explode"), EventType::Unknown);
        assert_eq!(serde_json::from_str::<NotificationType>("\"maybe\"").unwrap(), NotificationType::Unknown);
        assert_eq!(Health::parse("meh"), Health::Unknown);
        assert_eq!(CorrectiveAction::Unknown.as_str(), "unknown");
    }
}
