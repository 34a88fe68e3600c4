//! Topic and filter parsing: never panics; a parsed topic renders to a canonical
//! text that parses back to it, and matches the catch-all filters.
#![no_main]

use iiot_core::topic::{Topic, TopicFilter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = Topic::parse(text) {
        // Rendering gives the canonical text (ULIDs in upper case), which parses
        // back to the same topic; the input may have been another spelling.
        let canonical = topic.to_string();
        assert_eq!(Topic::parse(&canonical).ok(), Some(topic.clone()));
        assert!(canonical.eq_ignore_ascii_case(text));
        let all = TopicFilter::parse("#").unwrap();
        assert!(all.matches(text));
    }
    if let Ok(filter) = TopicFilter::parse(text) {
        let _ = filter.matches("acme/plant1/area/line/plc/dev-1/telemetry");
    }
});
