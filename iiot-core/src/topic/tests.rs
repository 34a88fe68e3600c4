use proptest::prelude::*;

use super::*;
use crate::types::{DeviceId, MessageId, TagPath};

const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

fn path() -> UnsPath {
    UnsPath::new(
        "acme",
        "plant1",
        "pack",
        "line3",
        "plc",
        DeviceId::new("plc-01").unwrap(),
    )
    .unwrap()
}

fn id() -> MessageId {
    ID.parse().unwrap()
}

#[test]
fn renders_every_class_exactly() {
    let p = path();
    let base = "acme/plant1/pack/line3/plc/plc-01";
    let cases: Vec<(Topic, String)> = vec![
        (p.telemetry(), format!("{base}/telemetry")),
        (
            p.telemetry_of(TagPath::new("tank1/level").unwrap()),
            format!("{base}/telemetry/tank1/level"),
        ),
        (p.status(), format!("{base}/status")),
        (p.command(id()), format!("{base}/commands/{ID}")),
        (p.command_ack(id()), format!("{base}/commands/{ID}/ack")),
        (p.config_desired(), format!("{base}/config/desired")),
        (p.config_reported(), format!("{base}/config/reported")),
        (p.ota_notification(), format!("{base}/ota/notification")),
        (p.ota_status(), format!("{base}/ota/status")),
    ];
    for (topic, text) in cases {
        assert_eq!(topic.to_string(), text);
        assert_eq!(Topic::parse(&text).unwrap(), topic);
        assert_eq!(text.parse::<Topic>().unwrap(), topic);
    }
    assert_eq!(p.to_string(), base);
    assert_eq!(p.enterprise().as_str(), "acme");
    assert_eq!(p.site().as_str(), "plant1");
    assert_eq!(p.area().as_str(), "pack");
    assert_eq!(p.line().as_str(), "line3");
    assert_eq!(p.device_type().as_str(), "plc");
    assert_eq!(p.device_id().as_str(), "plc-01");
}

fn err(topic: &str) -> TopicError {
    Topic::parse(topic).unwrap_err()
}

fn invalid_at(e: &TopicError) -> Option<(Level, &str, &SegmentProblem)> {
    match e {
        TopicError::InvalidSegment {
            position,
            value,
            problem,
        } => Some((*position, value.as_str(), problem)),
        _ => None,
    }
}

#[test]
fn parse_errors_name_each_path_level() {
    let good = ["e", "s", "a", "l", "t", "d"];
    for (i, level) in Level::PATH.iter().enumerate() {
        for (bad, problem) in [
            ("x y", SegmentProblem::ForbiddenChar { ch: ' ', at: 1 }),
            ("", SegmentProblem::Empty),
            (
                "x\u{7}",
                SegmentProblem::ForbiddenChar { ch: '\u{7}', at: 1 },
            ),
        ] {
            let mut levels = good;
            levels[i] = bad;
            let topic = format!("{}/status", levels.join("/"));
            let e = err(&topic);
            assert_eq!(invalid_at(&e), Some((*level, bad, &problem)), "{topic:?}");
            assert!(e.to_string().contains(&level.to_string()));
        }
    }
    let long = "x".repeat(129);
    let e = err(&format!("e/s/a/l/t/{long}/status"));
    assert_eq!(
        invalid_at(&e),
        Some((
            Level::DeviceId,
            long.as_str(),
            &SegmentProblem::TooLong { len: 129, max: 128 }
        ))
    );
    let e = err(&format!("e/s/{long}/l/t/d/status"));
    assert_eq!(invalid_at(&e).map(|x| x.0), Some(Level::Area));
}

#[test]
fn parse_errors_for_class_and_tail() {
    let b = "e/s/a/l/t/d";
    assert_eq!(
        invalid_at(&err(&format!("{b}/st atus"))).map(|x| x.0),
        Some(Level::Class)
    );
    assert_eq!(
        invalid_at(&err(&format!("{b}/"))).map(|x| x.0),
        Some(Level::Class)
    );
    assert_eq!(
        err(&format!("{b}/metrics")),
        TopicError::UnknownClass {
            class: "metrics".into()
        }
    );
    assert_eq!(
        err(&format!("{b}/config/other")),
        TopicError::UnknownClass {
            class: "config/other".into()
        }
    );
    assert_eq!(
        err(&format!("{b}/ota/x")),
        TopicError::UnknownClass {
            class: "ota/x".into()
        }
    );
    assert_eq!(
        err(&format!("{b}/config")),
        TopicError::MissingLevel {
            position: Level::Class
        }
    );
    assert_eq!(
        err(&format!("{b}/commands")),
        TopicError::MissingLevel {
            position: Level::CommandId
        }
    );
}

#[test]
fn parse_errors_for_commands() {
    let b = "e/s/a/l/t/d";
    for bad_id in [
        "not-a-ulid",
        "",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVV",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FAU",
        "01ARZ3NDEKTSV4RRFFQ69G5FA\u{e9}",
    ] {
        assert_eq!(
            err(&format!("{b}/commands/{bad_id}")),
            TopicError::BadCommandId {
                value: bad_id.into()
            },
            "{bad_id:?}"
        );
    }
    // Either case is accepted; rendering is canonical upper case.
    let lower = Topic::parse(&format!("{b}/commands/{}", ID.to_lowercase())).unwrap();
    assert_eq!(lower.class, TopicClass::Command(id()));
    assert_eq!(
        err(&format!("{b}/commands/{ID}/nack")),
        TopicError::UnexpectedLevel {
            class: "commands/{id}",
            index: 9,
            value: "nack".into()
        }
    );
    assert_eq!(
        err(&format!("{b}/commands/{ID}/ack/x")),
        TopicError::UnexpectedLevel {
            class: "commands/{id}/ack",
            index: 10,
            value: "x".into()
        }
    );
}

#[test]
fn parse_errors_for_extra_levels() {
    let b = "e/s/a/l/t/d";
    assert_eq!(
        err(&format!("{b}/status/x")),
        TopicError::UnexpectedLevel {
            class: "status",
            index: 8,
            value: "x".into()
        }
    );
    assert_eq!(
        err(&format!("{b}/config/desired/x")),
        TopicError::UnexpectedLevel {
            class: "config/desired",
            index: 9,
            value: "x".into()
        }
    );
    assert_eq!(
        err(&format!("{b}/ota/status/")),
        TopicError::UnexpectedLevel {
            class: "ota/status",
            index: 9,
            value: String::new()
        }
    );
    for tail in [
        "telemetry/a b",
        "telemetry/a//b",
        "telemetry/",
        "telemetry/x+",
    ] {
        assert_eq!(
            invalid_at(&err(&format!("{b}/{tail}"))).map(|x| x.0),
            Some(Level::SubLevel),
            "{tail}"
        );
    }
    let long_tag = vec!["x".repeat(100); 11].join("/");
    assert_eq!(
        invalid_at(&err(&format!("{b}/telemetry/{long_tag}"))).map(|x| x.2.clone()),
        Some(SegmentProblem::TooLong {
            len: 1110,
            max: 1024
        })
    );
}

#[test]
fn parse_errors_for_whole_topic() {
    assert_eq!(err(""), TopicError::Empty);
    assert_eq!(err("a/b/c"), TopicError::TooFewLevels { found: 3 });
    assert_eq!(err("e/s/a/l/t/d"), TopicError::TooFewLevels { found: 6 });
    assert_eq!(
        err("$SYS/broker/load/x/y/z/status"),
        TopicError::Reserved {
            value: "$SYS".into()
        }
    );
    assert_eq!(err("$"), TopicError::Reserved { value: "$".into() });
    let huge = format!("e/s/a/l/t/d/telemetry/{}", "x/".repeat(40_000));
    assert_eq!(
        err(&huge),
        TopicError::TooLong {
            len: huge.len(),
            max: MAX_TOPIC_LEN
        }
    );
    // A `$` after the first level is an ordinary character.
    assert!(Topic::parse("e/$s/a/l/t/d/status").is_ok());
}

#[test]
fn path_construction_errors() {
    let dev = DeviceId::new("d").unwrap();
    let e = UnsPath::new("e", "s", "a b", "l", "t", dev.clone()).unwrap_err();
    assert_eq!(invalid_at(&e).map(|x| x.0), Some(Level::Area));
    let e = UnsPath::new("e", "s", "a", "l", "t/x", dev.clone()).unwrap_err();
    assert_eq!(invalid_at(&e).map(|x| x.0), Some(Level::DeviceType));
    let e = UnsPath::new("$SYS", "s", "a", "l", "t", dev.clone()).unwrap_err();
    assert_eq!(
        e,
        TopicError::Reserved {
            value: "$SYS".into()
        }
    );
    assert!(UnsPath::new("e", "$s", "a", "l", "t", dev).is_ok());
    assert_eq!(
        Segment::new("a#").unwrap_err(),
        SegmentProblem::ForbiddenChar { ch: '#', at: 1 }
    );
}

#[test]
fn filters_render_exactly() {
    let p = path();
    let cases: Vec<(TopicFilter, String)> = vec![
        (
            site_filter(ClassFilter::Telemetry),
            "acme/plant1/+/+/+/+/telemetry/#".into(),
        ),
        (FilterBuilder::new().build(), "+/+/+/+/+/+/#".into()),
        (
            FilterBuilder::new().class(ClassFilter::Status).build(),
            "+/+/+/+/+/+/status".into(),
        ),
        (
            FilterBuilder::for_path(&p)
                .class(ClassFilter::Commands)
                .build(),
            "acme/plant1/pack/line3/plc/plc-01/commands/+".into(),
        ),
        (
            FilterBuilder::new().class(ClassFilter::CommandAcks).build(),
            "+/+/+/+/+/+/commands/+/ack".into(),
        ),
        (
            FilterBuilder::new()
                .class(ClassFilter::Command(id()))
                .build(),
            format!("+/+/+/+/+/+/commands/{ID}"),
        ),
        (
            FilterBuilder::new()
                .class(ClassFilter::CommandAck(id()))
                .build(),
            format!("+/+/+/+/+/+/commands/{ID}/ack"),
        ),
        (
            FilterBuilder::new()
                .class(ClassFilter::TelemetryUnder(
                    TagPath::new("tank1/level").unwrap(),
                ))
                .build(),
            "+/+/+/+/+/+/telemetry/tank1/level/#".into(),
        ),
        (
            FilterBuilder::new().class(ClassFilter::Config).build(),
            "+/+/+/+/+/+/config/+".into(),
        ),
        (
            FilterBuilder::new()
                .class(ClassFilter::ConfigDesired)
                .build(),
            "+/+/+/+/+/+/config/desired".into(),
        ),
        (
            FilterBuilder::new()
                .class(ClassFilter::ConfigReported)
                .build(),
            "+/+/+/+/+/+/config/reported".into(),
        ),
        (
            FilterBuilder::new().class(ClassFilter::Ota).build(),
            "+/+/+/+/+/+/ota/+".into(),
        ),
        (
            FilterBuilder::new()
                .class(ClassFilter::OtaNotification)
                .build(),
            "+/+/+/+/+/+/ota/notification".into(),
        ),
        (
            FilterBuilder::new().class(ClassFilter::OtaStatus).build(),
            "+/+/+/+/+/+/ota/status".into(),
        ),
        (
            FilterBuilder::new()
                .area("pack")
                .unwrap()
                .line("line3")
                .unwrap()
                .device_type("plc")
                .unwrap()
                .device_id(p.device_id())
                .build(),
            "+/+/pack/line3/plc/plc-01/#".into(),
        ),
        (
            site_filter(ClassFilter::Telemetry)
                .shared("ingest")
                .unwrap(),
            "$share/ingest/acme/plant1/+/+/+/+/telemetry/#".into(),
        ),
    ];
    for (filter, text) in cases {
        assert_eq!(filter.to_string(), text);
        assert_eq!(TopicFilter::parse(&text).unwrap(), filter, "{text}");
    }
}

#[test]
fn filter_builder_errors() {
    let e = FilterBuilder::new().line("a b").unwrap_err();
    assert_eq!(invalid_at(&e).map(|x| x.0), Some(Level::Line));
    let e = FilterBuilder::new().enterprise("$SYS").unwrap_err();
    assert_eq!(
        e,
        TopicError::Reserved {
            value: "$SYS".into()
        }
    );
    let e = FilterBuilder::new().build().shared("g/x").unwrap_err();
    assert_eq!(invalid_at(&e).map(|x| x.0), Some(Level::ShareGroup));
    let shared = FilterBuilder::new().build().shared("g").unwrap();
    assert_eq!(shared.share_group(), Some("g"));
}

#[test]
fn filters_match_uns_topics() {
    let p = path();
    let telemetry = site_filter(ClassFilter::Telemetry);
    assert!(telemetry.matches(&p.telemetry().to_string()));
    assert!(telemetry.matches(&p.telemetry_of(TagPath::new("a/b/c").unwrap()).to_string()));
    assert!(!telemetry.matches(&p.status().to_string()));
    assert!(!telemetry.matches("acme/plant2/pack/line3/plc/plc-01/telemetry"));
    let acks = FilterBuilder::new().class(ClassFilter::CommandAcks).build();
    assert!(acks.matches(&p.command_ack(id()).to_string()));
    assert!(!acks.matches(&p.command(id()).to_string()));
    let cmds = FilterBuilder::for_path(&p)
        .class(ClassFilter::Commands)
        .build();
    assert!(cmds.matches(&p.command(id()).to_string()));
    assert!(!cmds.matches(&p.command_ack(id()).to_string()));
    let status = FilterBuilder::new().class(ClassFilter::Status).build();
    assert!(status.matches(&p.status().to_string()));
    assert!(!status.matches(&p.ota_status().to_string()));
}

fn site_filter(class: ClassFilter) -> TopicFilter {
    FilterBuilder::new()
        .enterprise("acme")
        .unwrap()
        .site("plant1")
        .unwrap()
        .class(class)
        .build()
}

/// MQTT 3.1.1 §4.7 / MQTT 5 §4.7 matching rules, on raw filter strings.
#[test]
fn mqtt_matching_rules() {
    let cases: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("#", "sport/tennis", true),
        ("#", "/", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/tennis/+", "sport/tennis", false),
        ("sport/+", "sport/", true),
        ("sport/+", "sport", false),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+", "finance", true),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
        ("a/b", "a", false),
        ("a//b", "a//b", true),
        ("#", "$SYS/monitor", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$share/g/#", "a/b", true),
        ("$share/g/a/+", "a/b", true),
        ("$share/g/a/+", "$share/g/a/b", false),
        // Not topic names: nothing matches them.
        ("#", "", false),
        ("#", "a/+", false),
        ("#", "a/#", false),
        ("#", "a\0b", false),
    ];
    for &(filter, topic, expect) in cases {
        let f = TopicFilter::parse(filter).unwrap();
        assert_eq!(f.to_string(), filter);
        assert_eq!(f.matches(topic), expect, "{filter:?} vs {topic:?}");
    }
}

#[test]
fn filter_parse_errors() {
    let problem = |s: &str| match TopicFilter::parse(s) {
        Err(TopicError::InvalidFilter { reason }) => reason,
        other => panic!("{s:?}: {other:?}"),
    };
    assert_eq!(problem(""), FilterProblem::Empty);
    assert_eq!(
        problem("a/#/b"),
        FilterProblem::MultiLevelNotLast { index: 2 }
    );
    assert_eq!(problem("a/b#"), FilterProblem::WildcardInLevel { index: 2 });
    assert_eq!(problem("a+/b"), FilterProblem::WildcardInLevel { index: 1 });
    assert_eq!(problem("a\0"), FilterProblem::Nul);
    assert_eq!(problem("$share/g"), FilterProblem::BadShare);
    assert_eq!(problem("$share/g/"), FilterProblem::BadShare);
    assert_eq!(problem("$share//a"), FilterProblem::BadShare);
    assert_eq!(problem("$share/g+/a"), FilterProblem::BadShare);
    let long = "a".repeat(MAX_TOPIC_LEN + 1);
    assert_eq!(
        problem(&long),
        FilterProblem::TooLong {
            len: MAX_TOPIC_LEN + 1,
            max: MAX_TOPIC_LEN
        }
    );
    assert!(TopicFilter::parse("+").is_ok());
    assert!(TopicFilter::parse("/").is_ok());
    assert!("a/+/#".parse::<TopicFilter>().is_ok());
}

// ----- properties -----

fn seg() -> impl Strategy<Value = String> {
    "[^\\s\\p{Cc}+#/]{1,12}"
}

fn pooled_seg(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_owned)
}

fn arb_class() -> impl Strategy<Value = TopicClass> {
    let tag = prop::collection::vec(seg(), 1..4).prop_map(|v| TagPath::new(v.join("/")).unwrap());
    let msg = any::<u128>().prop_map(MessageId::from_u128);
    prop_oneof![
        prop::option::of(tag).prop_map(TopicClass::Telemetry),
        Just(TopicClass::Status),
        msg.clone().prop_map(TopicClass::Command),
        msg.prop_map(TopicClass::CommandAck),
        Just(TopicClass::ConfigDesired),
        Just(TopicClass::ConfigReported),
        Just(TopicClass::OtaNotification),
        Just(TopicClass::OtaStatus),
    ]
}

fn arb_topic() -> impl Strategy<Value = Topic> {
    (
        seg().prop_filter("no leading $", |s| !s.starts_with('$')),
        seg(),
        seg(),
        seg(),
        seg(),
        seg(),
        arb_class(),
    )
        .prop_map(|(e, s, a, l, t, d, class)| Topic {
            path: UnsPath::new(&e, &s, &a, &l, &t, DeviceId::new(d).unwrap()).unwrap(),
            class,
        })
}

/// Topics from small pools, so that two of them often share levels.
fn pooled_topic() -> impl Strategy<Value = Topic> {
    const P: &[&str] = &["x", "y"];
    (
        pooled_seg(P),
        pooled_seg(P),
        pooled_seg(P),
        pooled_seg(P),
        pooled_seg(P),
        pooled_seg(P),
        arb_class(),
    )
        .prop_map(|(e, s, a, l, t, d, class)| Topic {
            path: UnsPath::new(&e, &s, &a, &l, &t, DeviceId::new(d).unwrap()).unwrap(),
            class,
        })
}

proptest! {
    #[test]
    fn parse_render_round_trip(t in arb_topic()) {
        let text = t.to_string();
        prop_assert_eq!(Topic::parse(&text), Ok(t));
    }

    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = Topic::parse(&s);
        let _ = TopicFilter::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_topic_like(parts in prop::collection::vec("[a-z0-9$+# ]{0,3}|telemetry|commands|ack|config|ota|status|01ARZ3NDEKTSV4RRFFQ69G5FAV", 0..12)) {
        let s = parts.join("/");
        if let Ok(t) = Topic::parse(&s) {
            prop_assert_eq!(Topic::parse(&t.to_string()), Ok(t));
        }
        if let Ok(f) = TopicFilter::parse(&s) {
            prop_assert_eq!(TopicFilter::parse(&f.to_string()), Ok(f.clone()));
            let _ = f.matches(&s);
        }
    }

    #[test]
    fn site_and_class_filter_selects_exactly(t1 in pooled_topic(), t2 in pooled_topic()) {
        let filter = FilterBuilder::new()
            .enterprise(t1.path.enterprise().as_str()).unwrap()
            .site(t1.path.site().as_str()).unwrap()
            .class(ClassFilter::kind_of(&t1.class))
            .build();
        prop_assert!(filter.matches(&t1.to_string()));
        let expect = t1.path.enterprise() == t2.path.enterprise()
            && t1.path.site() == t2.path.site()
            && ClassFilter::kind_of(&t1.class) == ClassFilter::kind_of(&t2.class);
        prop_assert_eq!(filter.matches(&t2.to_string()), expect);
        let shared = filter.clone().shared("workers").unwrap();
        prop_assert_eq!(shared.matches(&t2.to_string()), expect);
        prop_assert_eq!(TopicFilter::parse(&shared.to_string()), Ok(shared));
    }

    #[test]
    fn device_filter_selects_exactly(t1 in pooled_topic(), t2 in pooled_topic()) {
        let all = FilterBuilder::for_path(&t1.path).build();
        prop_assert_eq!(all.matches(&t2.to_string()), t1.path == t2.path);
        let exact = FilterBuilder::for_path(&t1.path).class(exact_class(&t1.class)).build();
        let expect = t1.path == t2.path && exact_selects(&t1.class, &t2.class);
        prop_assert_eq!(exact.matches(&t2.to_string()), expect);
    }

    #[test]
    fn every_topic_matches_the_catch_alls(t in arb_topic()) {
        let text = t.to_string();
        prop_assert!(FilterBuilder::new().build().matches(&text));
        prop_assert!(TopicFilter::parse("#").unwrap().matches(&text));
        prop_assert!(FilterBuilder::new().class(ClassFilter::kind_of(&t.class)).build().matches(&text));
    }
}

/// The filter that selects exactly one class value.
fn exact_class(class: &TopicClass) -> ClassFilter {
    match class {
        TopicClass::Telemetry(Some(tag)) => ClassFilter::TelemetryUnder(tag.clone()),
        TopicClass::Command(id) => ClassFilter::Command(*id),
        TopicClass::CommandAck(id) => ClassFilter::CommandAck(*id),
        other => ClassFilter::kind_of(other),
    }
}

/// Whether the filter of `exact_class(a)` selects class `b`: `telemetry/#` takes every
/// telemetry topic, `telemetry/{tag}/#` the tag and the tags below it.
fn exact_selects(a: &TopicClass, b: &TopicClass) -> bool {
    match (a, b) {
        (TopicClass::Telemetry(None), TopicClass::Telemetry(_)) => true,
        (TopicClass::Telemetry(Some(x)), TopicClass::Telemetry(Some(y))) => {
            y == x || y.as_str().starts_with(&format!("{x}/"))
        }
        _ => a == b,
    }
}
