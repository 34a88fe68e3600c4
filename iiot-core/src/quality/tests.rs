use proptest::prelude::*;

use super::da;
use super::*;

const LIMITS: [Limit; 4] = [Limit::None, Limit::Low, Limit::High, Limit::Constant];

/// Every named constant: exact value, name and severity.
const NAMED_TABLE: &[(Quality, u32, &str, Severity)] = &[
    (Quality::GOOD, 0x0000_0000, "Good", Severity::Good),
    (
        Quality::GOOD_CLAMPED,
        0x0030_0000,
        "Good_Clamped",
        Severity::Good,
    ),
    (
        Quality::GOOD_LOCAL_OVERRIDE,
        0x0096_0000,
        "Good_LocalOverride",
        Severity::Good,
    ),
    (
        Quality::UNCERTAIN,
        0x4000_0000,
        "Uncertain",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE,
        0x408F_0000,
        "Uncertain_NoCommunicationLastUsableValue",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_LAST_USABLE_VALUE,
        0x4090_0000,
        "Uncertain_LastUsableValue",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_SUBSTITUTE_VALUE,
        0x4091_0000,
        "Uncertain_SubstituteValue",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_INITIAL_VALUE,
        0x4092_0000,
        "Uncertain_InitialValue",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_SENSOR_NOT_ACCURATE,
        0x4093_0000,
        "Uncertain_SensorNotAccurate",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_ENGINEERING_UNITS_EXCEEDED,
        0x4094_0000,
        "Uncertain_EngineeringUnitsExceeded",
        Severity::Uncertain,
    ),
    (
        Quality::UNCERTAIN_SUB_NORMAL,
        0x4095_0000,
        "Uncertain_SubNormal",
        Severity::Uncertain,
    ),
    (Quality::BAD, 0x8000_0000, "Bad", Severity::Bad),
    (
        Quality::BAD_UNEXPECTED_ERROR,
        0x8001_0000,
        "Bad_UnexpectedError",
        Severity::Bad,
    ),
    (
        Quality::BAD_INTERNAL_ERROR,
        0x8002_0000,
        "Bad_InternalError",
        Severity::Bad,
    ),
    (
        Quality::BAD_COMMUNICATION_ERROR,
        0x8005_0000,
        "Bad_CommunicationError",
        Severity::Bad,
    ),
    (
        Quality::BAD_DECODING_ERROR,
        0x8007_0000,
        "Bad_DecodingError",
        Severity::Bad,
    ),
    (
        Quality::BAD_TIMEOUT,
        0x800A_0000,
        "Bad_Timeout",
        Severity::Bad,
    ),
    (
        Quality::BAD_SERVER_NOT_CONNECTED,
        0x800D_0000,
        "Bad_ServerNotConnected",
        Severity::Bad,
    ),
    (
        Quality::BAD_NO_COMMUNICATION,
        0x8031_0000,
        "Bad_NoCommunication",
        Severity::Bad,
    ),
    (
        Quality::BAD_WAITING_FOR_INITIAL_DATA,
        0x8032_0000,
        "Bad_WaitingForInitialData",
        Severity::Bad,
    ),
    (
        Quality::BAD_NODE_ID_UNKNOWN,
        0x8034_0000,
        "Bad_NodeIdUnknown",
        Severity::Bad,
    ),
    (
        Quality::BAD_NOT_READABLE,
        0x803A_0000,
        "Bad_NotReadable",
        Severity::Bad,
    ),
    (
        Quality::BAD_NOT_WRITABLE,
        0x803B_0000,
        "Bad_NotWritable",
        Severity::Bad,
    ),
    (
        Quality::BAD_OUT_OF_RANGE,
        0x803C_0000,
        "Bad_OutOfRange",
        Severity::Bad,
    ),
    (
        Quality::BAD_NOT_SUPPORTED,
        0x803D_0000,
        "Bad_NotSupported",
        Severity::Bad,
    ),
    (
        Quality::BAD_TYPE_MISMATCH,
        0x8074_0000,
        "Bad_TypeMismatch",
        Severity::Bad,
    ),
    (
        Quality::BAD_CONFIGURATION_ERROR,
        0x8089_0000,
        "Bad_ConfigurationError",
        Severity::Bad,
    ),
    (
        Quality::BAD_NOT_CONNECTED,
        0x808A_0000,
        "Bad_NotConnected",
        Severity::Bad,
    ),
    (
        Quality::BAD_DEVICE_FAILURE,
        0x808B_0000,
        "Bad_DeviceFailure",
        Severity::Bad,
    ),
    (
        Quality::BAD_SENSOR_FAILURE,
        0x808C_0000,
        "Bad_SensorFailure",
        Severity::Bad,
    ),
    (
        Quality::BAD_OUT_OF_SERVICE,
        0x808D_0000,
        "Bad_OutOfService",
        Severity::Bad,
    ),
];

#[test]
fn named_constants_exact() {
    let table = NAMED_TABLE;
    assert_eq!(
        table.len(),
        codes::NAMED.len(),
        "every named code is in this table"
    );
    for &(q, code, name, severity) in table {
        assert_eq!(q.status_code(), code, "{name}");
        assert_eq!(q.name(), Some(name));
        assert_eq!(q.severity(), severity, "{name}");
        assert_eq!(q.to_string(), format!("{name} (0x{code:08X})"));
        assert_eq!(Quality::from_status_code(code), q);
        // Every named code maps to a DA byte of its own severity.
        assert_eq!(da::da_severity(q.to_da()), severity, "{name}");
    }
}

/// Every documented DA code, with each of the four limits, in both directions.
#[test]
fn da_table_both_directions() {
    let table: &[(u8, Quality)] = &[
        (0x00, Quality::BAD),
        (0x04, Quality::BAD_CONFIGURATION_ERROR),
        (0x08, Quality::BAD_NOT_CONNECTED),
        (0x0C, Quality::BAD_DEVICE_FAILURE),
        (0x10, Quality::BAD_SENSOR_FAILURE),
        (0x14, Quality::BAD_COMMUNICATION_ERROR),
        (0x18, Quality::BAD_NO_COMMUNICATION),
        (0x1C, Quality::BAD_OUT_OF_SERVICE),
        (0x20, Quality::BAD_WAITING_FOR_INITIAL_DATA),
        (0x40, Quality::UNCERTAIN),
        (0x44, Quality::UNCERTAIN_LAST_USABLE_VALUE),
        (0x50, Quality::UNCERTAIN_SENSOR_NOT_ACCURATE),
        (0x54, Quality::UNCERTAIN_ENGINEERING_UNITS_EXCEEDED),
        (0x58, Quality::UNCERTAIN_SUB_NORMAL),
        (0xC0, Quality::GOOD),
        (0xD8, Quality::GOOD_LOCAL_OVERRIDE),
    ];
    assert_eq!(table.len(), da::PAIRS.len());
    for &(byte, ua) in table {
        for limit in LIMITS {
            let b = byte | limit.bits();
            let q = ua.with_limit(limit);
            assert_eq!(Quality::from_da(b), q, "from_da(0x{b:02X})");
            assert_eq!(q.to_da(), b, "to_da({q})");
            assert_eq!(q.limit(), limit);
            assert_eq!(Quality::from_da(q.to_da()), q);
            assert_eq!(Quality::from_da(b).to_da(), b);
        }
    }
    // The three values DESIGN.md names.
    assert_eq!(Quality::GOOD.to_da(), 192);
    assert_eq!(Quality::UNCERTAIN_LAST_USABLE_VALUE.to_da(), 68);
    assert_eq!(Quality::BAD.to_da(), 0);
}

#[test]
fn limit_bits_exact() {
    assert_eq!(
        Quality::GOOD.with_limit(Limit::Low).status_code(),
        0x0000_0500
    );
    assert_eq!(
        Quality::GOOD.with_limit(Limit::High).status_code(),
        0x0000_0600
    );
    assert_eq!(
        Quality::BAD.with_limit(Limit::Constant).status_code(),
        0x8000_0700
    );
    assert_eq!(
        Quality::BAD.with_limit(Limit::Constant).info_type(),
        InfoType::DataValue
    );
    let q = Quality::UNCERTAIN
        .with_limit(Limit::High)
        .with_limit(Limit::None);
    assert_eq!(q, Quality::UNCERTAIN);
    assert_eq!(q.info_type(), InfoType::NotUsed);
    // Overflow keeps the DataValue info type when the limit is cleared.
    let q = Quality::from_status_code(0x0000_0680).with_limit(Limit::None);
    assert_eq!(q.status_code(), 0x0000_0480);
    assert!(q.overflow());
}

#[test]
fn flag_accessors() {
    let q = Quality::from_status_code(0x8031_C69F);
    assert!(q.structure_changed());
    assert!(q.semantics_changed());
    assert_eq!(q.info_type(), InfoType::DataValue);
    assert_eq!(q.limit(), Limit::High);
    assert!(q.overflow());
    assert_eq!(q.historian_bits(), 0x1F);
    assert_eq!(q.code(), 0x8031_0000);
    assert_eq!(q.sub_code(), 0x031);
    assert_eq!(q.without_flags(), Quality::BAD_NO_COMMUNICATION);
    assert_eq!(q.name(), Some("Bad_NoCommunication"));
    assert_eq!(q.to_string(), "Bad_NoCommunication (0x8031C69F)");
    assert_eq!(q.to_da(), 0x1A);
    let q = Quality::from_status_code(0);
    assert!(!q.structure_changed() && !q.semantics_changed() && !q.overflow());
    assert_eq!(q.info_type(), InfoType::NotUsed);
    assert_eq!(
        Quality::from_status_code(0x0000_0800).info_type(),
        InfoType::Reserved
    );
}

#[test]
fn severity_and_predicates() {
    let cases: &[(u32, Severity, bool, bool, bool)] = &[
        // code, severity, good, uncertain, bad
        (0x0000_0000, Severity::Good, true, false, false),
        (0x3FFF_FFFF, Severity::Good, true, false, false),
        (0x4000_0000, Severity::Uncertain, false, true, false),
        (0x7FFF_FFFF, Severity::Uncertain, false, true, false),
        (0x8000_0000, Severity::Bad, false, false, true),
        (0xC000_0000, Severity::Bad, false, false, true),
        (0xFFFF_FFFF, Severity::Bad, false, false, true),
    ];
    for &(code, sev, good, unc, bad) in cases {
        let q = Quality::from_status_code(code);
        assert_eq!(q.severity(), sev, "0x{code:08X}");
        assert_eq!(
            (q.is_good(), q.is_uncertain(), q.is_bad()),
            (good, unc, bad)
        );
        assert_eq!(q.is_usable(), !bad);
    }
}

#[test]
fn one_way_mappings() {
    let cases: &[(Quality, u8)] = &[
        (Quality::BAD_TIMEOUT, 0x18),
        (Quality::BAD_SERVER_NOT_CONNECTED, 0x18),
        (Quality::BAD_TYPE_MISMATCH, 0x04),
        (Quality::BAD_NODE_ID_UNKNOWN, 0x04),
        (Quality::BAD_INTERNAL_ERROR, 0x00),
        (Quality::BAD_DECODING_ERROR, 0x00),
        (Quality::BAD_NOT_READABLE, 0x00),
        (Quality::BAD_NOT_WRITABLE, 0x00),
        (Quality::BAD_OUT_OF_RANGE, 0x00),
        (Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE, 0x44),
        (Quality::UNCERTAIN_INITIAL_VALUE, 0x40),
        (Quality::UNCERTAIN_SUBSTITUTE_VALUE, 0x40),
        (Quality::GOOD_CLAMPED, 0xC0),
        (Quality::from_status_code(0xC000_0000), 0x00),
        (Quality::from_status_code(0x80AB_0000), 0x00),
        (Quality::BAD_TIMEOUT.with_limit(Limit::Constant), 0x1B),
    ];
    for &(q, b) in cases {
        assert_eq!(q.to_da(), b, "{q}");
    }
    // Undocumented DA sub-status and QQ = 10 fall back to the class's generic code.
    assert_eq!(Quality::from_da(0x24), Quality::BAD);
    assert_eq!(Quality::from_da(0x4C), Quality::UNCERTAIN);
    assert_eq!(Quality::from_da(0xC4), Quality::GOOD);
    assert_eq!(Quality::from_da(0x80), Quality::BAD);
    assert_eq!(
        Quality::from_da(0x9B),
        Quality::BAD.with_limit(Limit::Constant)
    );
    assert_eq!(
        Quality::from_da(0xFF),
        Quality::GOOD.with_limit(Limit::Constant)
    );
}

#[test]
fn display_unnamed() {
    assert_eq!(
        Quality::from_status_code(0x80AB_0000).to_string(),
        "unnamed Bad (0x80AB0000)"
    );
    assert_eq!(
        Quality::from_status_code(0x00A5_0000).to_string(),
        "unnamed Good (0x00A50000)"
    );
    assert_eq!(
        Quality::BAD.with_limit(Limit::Low).to_string(),
        "Bad (0x80000500)"
    );
}

#[test]
fn serde_is_the_u32() {
    let q = Quality::BAD_NO_COMMUNICATION;
    assert_eq!(serde_json::to_string(&q).unwrap(), "2150694912");
    let back: Quality = serde_json::from_str("2150694912").unwrap();
    assert_eq!(back, q);
    assert!(serde_json::from_str::<Quality>("-1").is_err());
    assert!(serde_json::from_str::<Quality>("\"Bad\"").is_err());
}

proptest! {
    #[test]
    fn from_da_keeps_class_and_limit(b in any::<u8>()) {
        let q = Quality::from_da(b);
        let back = q.to_da();
        prop_assert_eq!(da::da_severity(back), da::da_severity(b));
        prop_assert_eq!(back & 0b11, b & 0b11);
        prop_assert_eq!(q.severity(), da::da_severity(b));
        prop_assert_eq!(q.limit(), Limit::from_bits(b));
        // A DA byte that is not QQ = 10 and has a documented sub-status comes back whole.
        if da::PAIRS.iter().any(|(p, _)| *p == b & 0xFC) {
            prop_assert_eq!(back, b);
        }
    }

    #[test]
    fn severity_consistent_with_da(code in any::<u32>()) {
        let q = Quality::from_status_code(code);
        let b = q.to_da();
        prop_assert_eq!(da::da_severity(b), q.severity());
        prop_assert_ne!(b >> 6, 0b10, "QQ = 10 is never produced");
        prop_assert_eq!(Limit::from_bits(b), q.limit());
        prop_assert_eq!(q.is_usable(), !q.is_bad());
        let _ = q.to_string();
    }

    #[test]
    fn serde_round_trip(code in any::<u32>()) {
        let q = Quality::from_status_code(code);
        let json = serde_json::to_string(&q).unwrap();
        prop_assert_eq!(serde_json::from_str::<Quality>(&json).unwrap(), q);
    }
}
