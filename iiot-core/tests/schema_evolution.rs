//! Schema-evolution guard, in the spirit of `buf breaking`.
//!
//! `proto/snapshot/v1.json` is a committed snapshot of every v1 message and enum:
//! field names, numbers, types, labels, oneofs, reserved ranges and names. The
//! current schema (compiled into the crate) must be a compatible evolution of it:
//! no renumbered, retyped, renamed or removed-without-reservation field, and no
//! reuse of a reserved number or name. When the change is compatible but new
//! (an added field), regenerate the snapshot with
//! `IIOT_UPDATE_SCHEMA_SNAPSHOT=1 cargo test -p iiot-core --test schema_evolution`
//! and commit it, so the next change is checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FieldSnap {
    name: String,
    /// Scalar type name, or the full name of a message/enum type.
    r#type: String,
    label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oneof: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MessageSnap {
    fields: BTreeMap<u32, FieldSnap>,
    /// Inclusive ranges.
    reserved_numbers: Vec<(u32, u32)>,
    reserved_names: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct EnumSnap {
    values: BTreeMap<i32, String>,
    reserved_numbers: Vec<(i32, i32)>,
    reserved_names: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Snapshot {
    messages: BTreeMap<String, MessageSnap>,
    enums: BTreeMap<String, EnumSnap>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    MessageRemoved {
        message: String,
    },
    EnumRemoved {
        r#enum: String,
    },
    FieldRemovedWithoutReservedNumber {
        message: String,
        number: u32,
        name: String,
    },
    FieldRemovedWithoutReservedName {
        message: String,
        number: u32,
        name: String,
    },
    FieldTypeChanged {
        message: String,
        number: u32,
        old: String,
        new: String,
    },
    FieldRenamed {
        message: String,
        number: u32,
        old: String,
        new: String,
    },
    FieldLabelChanged {
        message: String,
        number: u32,
        old: String,
        new: String,
    },
    FieldOneofChanged {
        message: String,
        number: u32,
    },
    ReservedNumberReused {
        message: String,
        number: u32,
        name: String,
    },
    ReservedNameReused {
        message: String,
        name: String,
    },
    ReservationRemoved {
        message: String,
        number: u32,
    },
    EnumValueRemovedWithoutReserve {
        r#enum: String,
        number: i32,
        name: String,
    },
    EnumValueRenamed {
        r#enum: String,
        number: i32,
        old: String,
        new: String,
    },
    EnumReservedNumberReused {
        r#enum: String,
        number: i32,
    },
}

fn type_name(f: &prost_types::FieldDescriptorProto) -> String {
    match f.r#type() {
        Type::Message | Type::Enum => f.type_name().trim_start_matches('.').to_owned(),
        t => format!("{t:?}").to_lowercase(),
    }
}

fn add_message(prefix: &str, m: &DescriptorProto, snap: &mut Snapshot) {
    let full = format!("{prefix}.{}", m.name());
    let mut ms = MessageSnap::default();
    for f in &m.field {
        let oneof = f
            .oneof_index
            .filter(|_| !f.proto3_optional())
            .map(|i| m.oneof_decl[usize::try_from(i).unwrap()].name().to_owned());
        let label = match f.label() {
            Label::Repeated => "repeated",
            Label::Required => "required",
            Label::Optional if f.proto3_optional() => "optional",
            Label::Optional => "singular",
        };
        ms.fields.insert(
            u32::try_from(f.number()).unwrap(),
            FieldSnap {
                name: f.name().to_owned(),
                r#type: type_name(f),
                label: label.to_owned(),
                oneof,
            },
        );
    }
    for r in &m.reserved_range {
        // Descriptor ranges are end-exclusive.
        ms.reserved_numbers.push((
            u32::try_from(r.start()).unwrap(),
            u32::try_from(r.end() - 1).unwrap(),
        ));
    }
    ms.reserved_names = m.reserved_name.iter().cloned().collect();
    snap.messages.insert(full.clone(), ms);
    for nested in &m.nested_type {
        add_message(&full, nested, snap);
    }
    for e in &m.enum_type {
        add_enum(&full, e, snap);
    }
}

fn add_enum(prefix: &str, e: &EnumDescriptorProto, snap: &mut Snapshot) {
    let mut es = EnumSnap::default();
    for v in &e.value {
        es.values.insert(v.number(), v.name().to_owned());
    }
    for r in &e.reserved_range {
        // Enum reserved ranges are end-inclusive.
        es.reserved_numbers.push((r.start(), r.end()));
    }
    es.reserved_names = e.reserved_name.iter().cloned().collect();
    snap.enums.insert(format!("{prefix}.{}", e.name()), es);
}

fn current() -> Snapshot {
    let fds = FileDescriptorSet::decode(iiot_core::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut snap = Snapshot::default();
    for file in &fds.file {
        let pkg = file.package();
        for m in &file.message_type {
            add_message(pkg, m, &mut snap);
        }
        for e in &file.enum_type {
            add_enum(pkg, e, &mut snap);
        }
    }
    snap
}

fn in_ranges<T: PartialOrd + Copy>(ranges: &[(T, T)], n: T) -> bool {
    ranges.iter().any(|&(a, b)| a <= n && n <= b)
}

fn check(old: &Snapshot, new: &Snapshot) -> Vec<Violation> {
    let mut out = Vec::new();
    for (name, om) in &old.messages {
        let Some(nm) = new.messages.get(name) else {
            out.push(Violation::MessageRemoved {
                message: name.clone(),
            });
            continue;
        };
        let message = name.clone();
        for (&number, of) in &om.fields {
            match nm.fields.get(&number) {
                Some(nf) => {
                    if nf.r#type != of.r#type {
                        out.push(Violation::FieldTypeChanged {
                            message: message.clone(),
                            number,
                            old: of.r#type.clone(),
                            new: nf.r#type.clone(),
                        });
                    }
                    if nf.name != of.name {
                        out.push(Violation::FieldRenamed {
                            message: message.clone(),
                            number,
                            old: of.name.clone(),
                            new: nf.name.clone(),
                        });
                    }
                    if nf.label != of.label {
                        out.push(Violation::FieldLabelChanged {
                            message: message.clone(),
                            number,
                            old: of.label.clone(),
                            new: nf.label.clone(),
                        });
                    }
                    if nf.oneof != of.oneof {
                        out.push(Violation::FieldOneofChanged {
                            message: message.clone(),
                            number,
                        });
                    }
                }
                None => {
                    if !in_ranges(&nm.reserved_numbers, number) {
                        out.push(Violation::FieldRemovedWithoutReservedNumber {
                            message: message.clone(),
                            number,
                            name: of.name.clone(),
                        });
                    }
                    if !nm.reserved_names.contains(&of.name) {
                        out.push(Violation::FieldRemovedWithoutReservedName {
                            message: message.clone(),
                            number,
                            name: of.name.clone(),
                        });
                    }
                }
            }
        }
        for (&number, nf) in &nm.fields {
            if in_ranges(&om.reserved_numbers, number) || in_ranges(&nm.reserved_numbers, number) {
                out.push(Violation::ReservedNumberReused {
                    message: message.clone(),
                    number,
                    name: nf.name.clone(),
                });
            }
            if om.reserved_names.contains(&nf.name) {
                out.push(Violation::ReservedNameReused {
                    message: message.clone(),
                    name: nf.name.clone(),
                });
            }
        }
        for &(a, b) in &om.reserved_numbers {
            for number in [a, b] {
                if !in_ranges(&nm.reserved_numbers, number) {
                    out.push(Violation::ReservationRemoved {
                        message: message.clone(),
                        number,
                    });
                }
            }
        }
    }
    for (name, oe) in &old.enums {
        let Some(ne) = new.enums.get(name) else {
            out.push(Violation::EnumRemoved {
                r#enum: name.clone(),
            });
            continue;
        };
        for (&number, oname) in &oe.values {
            match ne.values.get(&number) {
                Some(nname) if nname != oname => out.push(Violation::EnumValueRenamed {
                    r#enum: name.clone(),
                    number,
                    old: oname.clone(),
                    new: nname.clone(),
                }),
                Some(_) => {}
                None if in_ranges(&ne.reserved_numbers, number)
                    && ne.reserved_names.contains(oname) => {}
                None => out.push(Violation::EnumValueRemovedWithoutReserve {
                    r#enum: name.clone(),
                    number,
                    name: oname.clone(),
                }),
            }
        }
        for &number in ne.values.keys() {
            if in_ranges(&oe.reserved_numbers, number) {
                out.push(Violation::EnumReservedNumberReused {
                    r#enum: name.clone(),
                    number,
                });
            }
        }
    }
    out
}

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/snapshot/v1.json")
}

#[test]
fn current_schema_is_a_compatible_evolution_of_the_snapshot() {
    let now = current();
    let path = snapshot_path();
    if std::env::var_os("IIOT_UPDATE_SCHEMA_SNAPSHOT").is_some() {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let old: Snapshot = serde_json::from_str(&text).unwrap();
            let v = check(&old, &now);
            assert!(
                v.is_empty(),
                "refusing to update the snapshot over breaking changes: {v:#?}"
            );
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .expect("snapshot missing: run with IIOT_UPDATE_SCHEMA_SNAPSHOT=1");
    let old: Snapshot = serde_json::from_str(&text).unwrap();
    let violations = check(&old, &now);
    assert!(
        violations.is_empty(),
        "breaking schema changes against {}: {violations:#?}",
        path.display()
    );
    assert_eq!(
        old, now,
        "the schema changed compatibly; record it with IIOT_UPDATE_SCHEMA_SNAPSHOT=1 cargo test -p iiot-core --test schema_evolution"
    );
    // Sanity: the snapshot really covers the contract.
    for m in [
        "iiot.v1.TelemetryBatch",
        "iiot.v1.Sample",
        "iiot.v1.Status",
        "iiot.v1.DataLoss",
        "iiot.v1.Command",
        "iiot.v1.CommandAck",
        "iiot.v1.SignedManifest",
        "iiot.v1.ManifestBody",
        "iiot.v1.OtaStatus",
        "iiot.v1.ConfigDesired",
        "iiot.v1.ConfigReported",
    ] {
        assert!(old.messages.contains_key(m), "{m} missing from snapshot");
    }
}

#[test]
fn hot_fields_use_one_byte_tags() {
    let now = current();
    let batch = &now.messages["iiot.v1.TelemetryBatch"];
    let sample = &now.messages["iiot.v1.Sample"];
    for (msg, names) in [
        (
            batch,
            &[
                "schema_version",
                "message_id",
                "device_id",
                "seq",
                "gateway_time_unix_ns",
                "samples",
            ][..],
        ),
        (
            sample,
            &["tag", "double_value", "quality", "source_time_offset_ns"][..],
        ),
    ] {
        for name in names {
            let (&n, _) = msg.fields.iter().find(|(_, f)| f.name == *name).unwrap();
            assert!(n <= 15, "{name} has number {n}");
        }
    }
    // Every message carries schema_version as field 1, which the router reads first.
    for (name, m) in &now.messages {
        if name.ends_with("Entry")
            || [
                "iiot.v1.Value",
                "iiot.v1.Sample",
                "iiot.v1.Constraints",
                "iiot.v1.Interlock",
                "iiot.v1.Signature",
                // Parts of Status (the gateway heartbeat), never sent alone.
                "iiot.v1.Backlog",
                "iiot.v1.SourceHealth",
            ]
            .contains(&name.as_str())
        {
            continue;
        }
        assert_eq!(
            m.fields.get(&1).map(|f| f.name.as_str()),
            Some("schema_version"),
            "{name}"
        );
    }
}

/// The guard itself: a deliberately broken snapshot pair must be caught, rule by rule.
#[test]
fn guard_catches_every_kind_of_break() {
    let base = current();
    let tb = "iiot.v1.TelemetryBatch".to_owned();

    // Renumbered field: `seq` moves from 4 to 40.
    let mut new = base.clone();
    let f = new
        .messages
        .get_mut(&tb)
        .unwrap()
        .fields
        .remove(&4)
        .unwrap();
    new.messages.get_mut(&tb).unwrap().fields.insert(40, f);
    let v = check(&base, &new);
    assert!(
        v.contains(&Violation::FieldRemovedWithoutReservedNumber {
            message: tb.clone(),
            number: 4,
            name: "seq".into()
        }),
        "{v:?}"
    );

    // Retyped field: seq uint64 -> string.
    let mut new = base.clone();
    new.messages
        .get_mut(&tb)
        .unwrap()
        .fields
        .get_mut(&4)
        .unwrap()
        .r#type = "string".into();
    assert_eq!(
        check(&base, &new),
        vec![Violation::FieldTypeChanged {
            message: tb.clone(),
            number: 4,
            old: "uint64".into(),
            new: "string".into()
        }]
    );

    // Renamed field.
    let mut new = base.clone();
    new.messages
        .get_mut(&tb)
        .unwrap()
        .fields
        .get_mut(&4)
        .unwrap()
        .name = "sequence".into();
    assert!(matches!(
        check(&base, &new)[..],
        [Violation::FieldRenamed { number: 4, .. }]
    ));

    // Removed without reservation, then removed properly.
    let mut new = base.clone();
    new.messages.get_mut(&tb).unwrap().fields.remove(&16);
    assert_eq!(check(&base, &new).len(), 2);
    new.messages
        .get_mut(&tb)
        .unwrap()
        .reserved_numbers
        .push((16, 16));
    new.messages
        .get_mut(&tb)
        .unwrap()
        .reserved_names
        .insert("firmware_version".into());
    assert_eq!(check(&base, &new), vec![]);

    // Reused reserved number and name.
    let old = new.clone();
    let mut reused = old.clone();
    reused.messages.get_mut(&tb).unwrap().fields.insert(
        16,
        FieldSnap {
            name: "firmware_version".into(),
            r#type: "bytes".into(),
            label: "singular".into(),
            oneof: None,
        },
    );
    let v = check(&old, &reused);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::ReservedNumberReused { number: 16, .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::ReservedNameReused { .. })),
        "{v:?}"
    );

    // Dropped reservation.
    let mut dropped = old.clone();
    dropped
        .messages
        .get_mut(&tb)
        .unwrap()
        .reserved_numbers
        .clear();
    assert!(
        check(&old, &dropped)
            .iter()
            .any(|x| matches!(x, Violation::ReservationRemoved { number: 16, .. }))
    );

    // Label change (singular -> repeated) and oneof change.
    let mut new = base.clone();
    new.messages
        .get_mut(&tb)
        .unwrap()
        .fields
        .get_mut(&3)
        .unwrap()
        .label = "repeated".into();
    assert!(matches!(
        check(&base, &new)[..],
        [Violation::FieldLabelChanged { number: 3, .. }]
    ));
    let mut new = base.clone();
    new.messages
        .get_mut("iiot.v1.Sample")
        .unwrap()
        .fields
        .get_mut(&2)
        .unwrap()
        .oneof = None;
    assert!(matches!(
        check(&base, &new)[..],
        [Violation::FieldOneofChanged { number: 2, .. }]
    ));

    // Removed message, enum value renamed or removed.
    let mut new = base.clone();
    new.messages.remove("iiot.v1.Status");
    assert_eq!(
        check(&base, &new),
        vec![Violation::MessageRemoved {
            message: "iiot.v1.Status".into()
        }]
    );
    let mut new = base.clone();
    new.enums
        .get_mut("iiot.v1.DataLossReason")
        .unwrap()
        .values
        .insert(1, "DATA_LOSS_REASON_FULL".into());
    assert!(matches!(
        check(&base, &new)[..],
        [Violation::EnumValueRenamed { number: 1, .. }]
    ));
    new.enums
        .get_mut("iiot.v1.DataLossReason")
        .unwrap()
        .values
        .remove(&1);
    assert!(matches!(
        check(&base, &new)[..],
        [Violation::EnumValueRemovedWithoutReserve { number: 1, .. }]
    ));

    // Adding an optional field is compatible.
    let mut new = base.clone();
    new.messages.get_mut(&tb).unwrap().fields.insert(
        18,
        FieldSnap {
            name: "site".into(),
            r#type: "string".into(),
            label: "optional".into(),
            oneof: None,
        },
    );
    assert_eq!(check(&base, &new), vec![]);
}
