use super::*;

fn one(tag: TagConfig) -> Result<RegisterMap, MapError> {
    RegisterMap::from_config(&MapConfig {
        poll_groups: BTreeMap::new(),
        tags: vec![tag],
    })
}

#[test]
fn notation_rule() {
    assert_eq!(parse_notation("40001"), Ok((Area::HoldingRegister, 0)));
    assert_eq!(parse_notation("40010"), Ok((Area::HoldingRegister, 9)));
    assert_eq!(parse_notation("400001"), Ok((Area::HoldingRegister, 0)));
    assert_eq!(parse_notation("465536"), Ok((Area::HoldingRegister, 65535)));
    assert_eq!(parse_notation("30001"), Ok((Area::InputRegister, 0)));
    assert_eq!(parse_notation("10001"), Ok((Area::DiscreteInput, 0)));
    assert_eq!(parse_notation("00001"), Ok((Area::Coil, 0)));
    for bad in [
        "40000", "4001", "20001", "465537", "4000x", "", "4000001", "-4001",
    ] {
        assert!(parse_notation(bad).is_err(), "{bad}");
    }
}

#[test]
fn integer_address_is_zero_based_and_needs_area() {
    let mut t = TagConfig::new("a", Area::HoldingRegister, 40001, DataType::U16);
    let m = one(t.clone()).unwrap();
    assert_eq!(m.tags()[0].address, 40001);
    t.area = None;
    let e = one(t).unwrap_err();
    assert_eq!(
        e,
        MapError::Tag {
            tag: "a".into(),
            problem: TagProblem::MissingArea
        }
    );
}

#[test]
fn errors_name_the_tag() {
    type Check = fn(&TagProblem) -> bool;
    let cases: Vec<(TagConfig, Check)> = vec![
        (TagConfig::new("x", Area::Coil, 0, DataType::F32), |p| {
            matches!(p, TagProblem::TypeArea { .. })
        }),
        (
            TagConfig::new("x", Area::HoldingRegister, 0, DataType::Bool),
            |p| matches!(p, TagProblem::TypeArea { .. }),
        ),
        (
            TagConfig::new("x", Area::HoldingRegister, 65535, DataType::U32),
            |p| matches!(p, TagProblem::AddressOverflow { .. }),
        ),
        (
            TagConfig::new("x", Area::HoldingRegister, 0, DataType::Bit),
            |p| matches!(p, TagProblem::Bit { bit: None }),
        ),
        (
            TagConfig::new("x", Area::HoldingRegister, 0, DataType::String),
            |p| matches!(p, TagProblem::Length { length: None }),
        ),
        (
            {
                let mut t = TagConfig::new("x", Area::HoldingRegister, 0, DataType::U16);
                t.scale = 0.0;
                t
            },
            |p| matches!(p, TagProblem::Scaling { .. }),
        ),
        (
            {
                let mut t = TagConfig::new("x", Area::HoldingRegister, 0, DataType::U16);
                t.poll_group = "nope".into();
                t
            },
            |p| matches!(p, TagProblem::UnknownGroup { .. }),
        ),
        (
            {
                let mut t = TagConfig::new("x", Area::HoldingRegister, 0, DataType::String);
                t.length = Some(4);
                t.order = ByteOrder::Cdab;
                t
            },
            |p| matches!(p, TagProblem::StringOrder { .. }),
        ),
        (
            {
                let mut t = TagConfig::new("x", Area::Coil, 0, DataType::Bool);
                t.address = AddressSpec::Notation("40001".into());
                t
            },
            |p| matches!(p, TagProblem::AreaConflict { .. }),
        ),
        (
            {
                let mut t = TagConfig::new("x", Area::HoldingRegister, 0, DataType::Bool);
                t.deadband = Some(Deadband::Absolute(1.0));
                t
            },
            |p| matches!(p, TagProblem::TypeArea { .. }),
        ),
        (
            TagConfig::new("bad name", Area::Coil, 0, DataType::Bool),
            |p| matches!(p, TagProblem::Name(_)),
        ),
    ];
    for (t, check) in cases {
        let name = t.name.clone();
        match one(t) {
            Err(MapError::Tag { tag, problem }) => {
                assert_eq!(tag, name);
                assert!(check(&problem), "{problem}");
                assert!(
                    MapError::Tag { tag, problem }.to_string().contains(&name),
                    "message names the tag"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn duplicate_names_are_refused() {
    let t = TagConfig::new("a", Area::Coil, 0, DataType::Bool);
    let e = RegisterMap::from_config(&MapConfig {
        poll_groups: BTreeMap::new(),
        tags: vec![t.clone(), t],
    })
    .unwrap_err();
    assert!(matches!(
        e,
        MapError::Tag {
            problem: TagProblem::Duplicate,
            ..
        }
    ));
}

#[test]
fn toml_notation_and_unknown_fields() {
    let m = RegisterMap::from_toml_str(
        r#"
        [[tags]]
        name = "p"
        address = "40001"
        type = "f32"
        order = "CDAB"
        "#,
    )
    .unwrap();
    assert_eq!(m.tags()[0].area, Area::HoldingRegister);
    assert_eq!(m.tags()[0].address, 0);
    assert_eq!(m.tags()[0].order, ByteOrder::Cdab);
    let e = RegisterMap::from_toml_str(
        r#"
        [[tags]]
        name = "p"
        address = "40001"
        type = "f32"
        colour = "red"
        "#,
    )
    .unwrap_err();
    assert!(matches!(e, MapError::Parse { format: "toml", .. }), "{e}");
    let m = RegisterMap::from_toml_str(
        r#"
        [[tags]]
        name = "q"
        address = "400001"
        type = "u64"
        order = "GHEFCDAB"
        deadband = { percent = 2.5 }
        "#,
    )
    .unwrap();
    assert_eq!(m.tags()[0].order, ByteOrder::Cdab);
    assert_eq!(m.tags()[0].deadband, Some(Deadband::Percent(2.5)));
}

fn map(tags: Vec<TagConfig>) -> Result<RegisterMap, MapError> {
    RegisterMap::from_config(&MapConfig {
        poll_groups: BTreeMap::new(),
        tags,
    })
}

/// Issue 14: two tags claiming the same register are refused at load, naming
/// both and the register, unless one marks the overlap as intended; bits of
/// one register, other units and other areas do not overlap.
#[test]
fn overlapping_tags_are_refused_unless_marked() {
    let hr = Area::HoldingRegister;
    let wide = TagConfig::new("flow", hr, 0, DataType::U32); // 40001-40002
    let inside = TagConfig::new("flow/low", hr, 1, DataType::U16); // 40002
    assert_eq!(
        map(vec![wide.clone(), inside.clone()]).unwrap_err(),
        MapError::Overlap {
            tag: "flow/low".into(),
            other: "flow".into(),
            register: "40002".into(),
        }
    );
    assert!(
        map(vec![wide.clone(), inside.clone()])
            .unwrap_err()
            .to_string()
            .contains("overlap = true")
    );
    let mut marked = inside.clone();
    marked.overlap = true;
    assert!(map(vec![wide.clone(), marked]).is_ok());
    // Adjacent, not overlapping.
    let next = TagConfig::new("next", hr, 2, DataType::U16);
    assert!(map(vec![wide.clone(), next]).is_ok());
    // Other unit, other area.
    let mut other_unit = inside.clone();
    other_unit.unit_id = 2;
    assert!(map(vec![wide.clone(), other_unit]).is_ok());
    let input = TagConfig::new("in", Area::InputRegister, 1, DataType::U16);
    assert!(map(vec![wide, input]).is_ok());
    // Bits of one register: different bits are fine, the same bit twice is not.
    let bit = |name: &str, b: u8| {
        let mut t = TagConfig::new(name, hr, 9, DataType::Bit);
        t.bit = Some(b);
        t
    };
    assert!(map(vec![bit("a", 0), bit("b", 1), bit("c", 15)]).is_ok());
    assert!(matches!(
        map(vec![bit("a", 3), bit("b", 3)]).unwrap_err(),
        MapError::Overlap { .. }
    ));
    // A whole register and a bit of it overlap.
    let word = TagConfig::new("word", hr, 9, DataType::U16);
    assert!(map(vec![word, bit("a", 0)]).is_err());
    assert_eq!(notation(Area::Coil, 0), "00001");
    assert_eq!(notation(hr, 12_344), "412345");
}
