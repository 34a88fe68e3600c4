//! Topic and filter parsing: never panics; a parsed topic renders back to the
//! same text and matches the catch-all filters.
#![no_main]

use iiot_core::topic::{Topic, TopicFilter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = Topic::parse(text) {
        assert_eq!(topic.to_string(), text);
        let all = TopicFilter::parse("#").unwrap();
        assert!(all.matches(text));
    }
    if let Ok(filter) = TopicFilter::parse(text) {
        let _ = filter.matches("acme/plant1/area/line/plc/dev-1/telemetry");
    }
});
