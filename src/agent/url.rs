//! URL parsing of the VIM command API (agent spec §4.2), kept byte-for-byte
//! compatible with the original: substring search for the level prefix, a
//! fixed 36-character id, and a suffix after one skipped separator.
//!
//! Pure code; runs on the HTTP worker threads.

/// Which family a URL belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Host,
    Instance,
}

/// The command a suffix names; anything else is `Other` (the original's
/// "not set"), which host PUT treats as disable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suffix {
    None,
    Enable,
    Disable,
    Vote,
    Notify,
    Other(String),
}

/// A parsed command URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdUrl {
    pub level: Level,
    /// The 36 characters after the prefix (fewer when the URL is shorter).
    pub id: String,
    pub suffix: Suffix,
}

const HOST_PREFIX: &str = "/v1/hosts/";
const INSTANCE_PREFIX: &str = "/v1/instances/";
const ID_LEN: usize = 36;

/// Parses a raw request URI; `None` when it names neither level (403).
pub fn parse(raw: &str) -> Option<CmdUrl> {
    let (level, rest) = if let Some(at) = raw.find(HOST_PREFIX) {
        (Level::Host, &raw[at + HOST_PREFIX.len()..])
    } else if let Some(at) = raw.find(INSTANCE_PREFIX) {
        (Level::Instance, &raw[at + INSTANCE_PREFIX.len()..])
    } else {
        return None;
    };
    let mut chars = rest.chars();
    let id: String = chars.by_ref().take(ID_LEN).collect();
    // The separator after the id is skipped without being checked.
    let _separator = chars.next();
    let tail: String = chars.collect();
    let suffix = match tail.as_str() {
        "" => Suffix::None,
        "enable" => Suffix::Enable,
        "disable" => Suffix::Disable,
        "vote" => Suffix::Vote,
        "notify" => Suffix::Notify,
        other => Suffix::Other(other.to_string()),
    };
    Some(CmdUrl { level, id, suffix })
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "8d80875b-fa73-4ccb-bce3-1cd4df104400";

    #[test]
    fn host_urls_with_and_without_suffix() {
        let p = parse(&format!("/v1/hosts/{U}")).unwrap();
        assert_eq!((p.level, p.id.as_str(), p.suffix), (Level::Host, U, Suffix::None));
        let p = parse(&format!("/v1/hosts/{U}/enable")).unwrap();
        assert_eq!(p.suffix, Suffix::Enable);
        let p = parse(&format!("/v1/hosts/{U}/disable")).unwrap();
        assert_eq!(p.suffix, Suffix::Disable);
    }

    #[test]
    fn instance_urls_vote_notify_and_others() {
        let p = parse(&format!("/v1/instances/{U}/vote")).unwrap();
        assert_eq!((p.level, p.suffix), (Level::Instance, Suffix::Vote));
        let p = parse(&format!("/v1/instances/{U}/notify")).unwrap();
        assert_eq!(p.suffix, Suffix::Notify);
        let p = parse(&format!("/v1/instances/{U}?x=1")).unwrap();
        assert_eq!(p.suffix, Suffix::Other("x=1".into()));
    }

    #[test]
    fn separator_is_not_checked_and_prefix_is_a_substring() {
        let p = parse(&format!("/api/v1/hosts/{U}Xenable")).unwrap();
        assert_eq!(p.suffix, Suffix::Enable);
        assert_eq!(p.id, U);
    }

    #[test]
    fn short_ids_and_no_level() {
        let p = parse("/v1/hosts/compute-0").unwrap();
        assert_eq!(p.id, "compute-0");
        assert_eq!(p.suffix, Suffix::None);
        assert_eq!(parse("/v1/other/x"), None);
        assert_eq!(parse("/"), None);
        // The host prefix wins when both occur.
        assert_eq!(parse(&format!("/v1/instances/v1/hosts/{U}")).unwrap().level, Level::Host);
    }
}
