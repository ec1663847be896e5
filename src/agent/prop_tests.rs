//! Property tests of guestAgent's untrusted-input parsers (issue 6): the
//! guestServer datagram decoder, the VIM request URL and the request bodies.
//! No panic on arbitrary input; a well-formed URL parses back to its parts.

use proptest::prelude::*;

use super::api::{hosts, instances};
use super::url::{parse, Suffix};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn server_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        let _ = super::link::decode(&bytes);
    }

    #[test]
    fn keyed_server_datagrams_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..1200),
        key in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let key = crate::wire::auth::HmacKey::new(key).unwrap();
        prop_assert!(super::link::decode_keyed(Some(&key), &bytes).is_err());
    }

    #[test]
    fn urls_and_bodies_never_panic(
        url in "\\PC{0,120}",
        tail in "(/v1/(hosts|instances)/)?\\PC{0,60}",
        method in "(GET|PUT|POST|DELETE|PATCH|[A-Z]{0,8})",
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        for raw in [url.as_str(), tail.as_str()] {
            if let Some(u) = parse(raw) {
                let _ = hosts::parse(&method, &u, &body);
                let _ = instances::parse(&method, &u, &body);
                let _ = instances::endpoint(&u);
            }
        }
    }

    #[test]
    fn well_formed_urls_parse_to_their_parts(
        id in "[0-9a-f-]{36}",
        host in any::<bool>(),
        suffix in prop::sample::select(vec!["", "enable", "disable", "vote", "notify"]),
    ) {
        let level = if host { "hosts" } else { "instances" };
        let raw = if suffix.is_empty() { format!("/v1/{level}/{id}") } else { format!("/v1/{level}/{id}/{suffix}") };
        let u = parse(&raw).unwrap();
        prop_assert_eq!(&u.id, &id);
        let want = match suffix {
            "" => Suffix::None,
            "enable" => Suffix::Enable,
            "disable" => Suffix::Disable,
            "vote" => Suffix::Vote,
            _ => Suffix::Notify,
        };
        prop_assert_eq!(u.suffix, want);
    }
}
