//! Register maps: which tag lives where, in which type and order.
//!
//! A map is written in TOML or JSON ([`MapConfig`], see `docs/modbus-map.toml` and
//! `docs/modbus-map.json`) and validated into a [`RegisterMap`] when loaded. Every
//! validation error names the tag it is about.
//!
//! # Addresses
//!
//! An integer `address` is the 0-based protocol address sent on the wire, and `area`
//! must be given. A string `address` is the one-based Modicon notation and implies the
//! area: `"00001"`..`"09999"` coils, `"10001"`.. discrete inputs, `"30001"`.. input
//! registers, `"40001"`.. holding registers, and the six-digit forms `"000001"`..`"065536"`,
//! `"100001"`.., `"300001"`.., `"400001"`..`"465536"`. **`"40001"` is holding register 0**
//! (the first digit is the area, the rest is the address plus one). An integer `40001` is
//! the 0-based address 40001, never notation.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use iiot_core::types::TagPath;
use serde::{Deserialize, Serialize};

mod error;
pub use error::{MapError, TagProblem};

/// Largest register count of one read request (FC3/FC4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Largest bit count of one read request (FC1/FC2).
pub const MAX_READ_BITS: u16 = 2000;

/// The four Modbus data areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Read-write bits (FC1 read, FC5/FC15 write).
    Coil,
    /// Read-only bits (FC2).
    DiscreteInput,
    /// Read-only 16-bit registers (FC4).
    InputRegister,
    /// Read-write 16-bit registers (FC3 read, FC6/FC16 write).
    HoldingRegister,
}

impl Area {
    /// Whether the area holds bits (coils, discrete inputs) rather than registers.
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::DiscreteInput)
    }
    /// Whether the area can be written.
    pub const fn is_writable(self) -> bool {
        matches!(self, Self::Coil | Self::HoldingRegister)
    }
    /// Largest item count one read request may cover.
    pub const fn max_read(self) -> u16 {
        if self.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }
}

/// The type a tag decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil or discrete input.
    Bool,
    /// One bit (`bit` = 0..15, 0 = least significant) of a register.
    Bit,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// Unsigned 32-bit (2 registers).
    U32,
    /// Signed 32-bit (2 registers).
    I32,
    /// Unsigned 64-bit (4 registers).
    U64,
    /// Signed 64-bit (4 registers).
    I64,
    /// IEEE 754 single (2 registers).
    F32,
    /// IEEE 754 double (4 registers).
    F64,
    /// Fixed-length text of `length` bytes (two per register), padded with NUL.
    String,
}

impl DataType {
    /// Registers (or bits) the type occupies; strings use `string_len` bytes.
    pub const fn width(self, string_len: u16) -> u16 {
        match self {
            Self::Bool | Self::Bit | Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
            Self::String => string_len.div_ceil(2),
        }
    }
    /// Whether the type is numeric (scale, offset and deadbands apply).
    pub const fn is_numeric(self) -> bool {
        !matches!(self, Self::Bool | Self::Bit | Self::String)
    }
}

/// Byte and word order of multi-register values.
///
/// Letters name the bytes of the value, most significant first (`A`), in the order they
/// arrive on the wire. The 64-bit names are accepted as aliases of the same rule: no swap
/// (`ABCDEFGH`), word swap (`GHEFCDAB`), byte swap in each word (`BADCFEHG`), both
/// (`HGFEDCBA`). For 16-bit values only the byte swap matters; strings accept `ABCD`
/// and `BADC` (alias `AB`, `BA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ByteOrder {
    /// Big-endian, first register most significant (the Modbus convention).
    #[default]
    #[serde(rename = "ABCD", alias = "ABCDEFGH", alias = "AB")]
    Abcd,
    /// Word swap: first register least significant, bytes big-endian.
    #[serde(rename = "CDAB", alias = "GHEFCDAB")]
    Cdab,
    /// Byte swap inside each register, first register most significant.
    #[serde(rename = "BADC", alias = "BADCFEHG", alias = "BA")]
    Badc,
    /// Little-endian: word swap and byte swap.
    #[serde(rename = "DCBA", alias = "HGFEDCBA")]
    Dcba,
}

impl ByteOrder {
    /// All four orders.
    pub const ALL: [Self; 4] = [Self::Abcd, Self::Cdab, Self::Badc, Self::Dcba];
    /// Whether the two bytes of each register are swapped.
    pub const fn byte_swap(self) -> bool {
        matches!(self, Self::Badc | Self::Dcba)
    }
    /// Whether the registers arrive least significant first.
    pub const fn word_swap(self) -> bool {
        matches!(self, Self::Cdab | Self::Dcba)
    }
}

/// Report-by-exception threshold of a numeric tag (core's, where the gateway
/// runtime's report by exception lives).
pub use iiot_core::source::Deadband;

/// How writes to a tag are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteFunction {
    /// FC5 for a coil, FC6 for a one-register value, FC16 for wider values.
    #[default]
    Auto,
    /// Always the "multiple" functions, FC15 and FC16 (for devices without FC5/FC6).
    Multiple,
}

/// A tag's address as written in the map: 0-based, or Modicon notation text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddressSpec {
    /// 0-based protocol address; the tag's `area` is required.
    Offset(u16),
    /// One-based Modicon notation, e.g. `"40001"` (= holding register 0).
    Notation(String),
}

impl Default for AddressSpec {
    fn default() -> Self {
        Self::Offset(0)
    }
}

/// A poll group: tags polled together at one interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollGroupConfig {
    /// Poll interval (`interval = "250ms"`, more than zero).
    #[serde(with = "iiot_core::duration::human")]
    pub interval: Duration,
}

/// One tag as written in the map file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Tag path, e.g. `tank1/level`.
    pub name: String,
    /// Modbus unit (slave) id. Default 1.
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// Data area; implied by notation addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<Area>,
    /// Address: integer 0-based or notation text.
    pub address: AddressSpec,
    /// Value type.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Bit index for `bit` tags (0 = least significant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// Length in bytes for `string` tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u16>,
    /// Byte/word order. Default `ABCD`.
    #[serde(default)]
    pub order: ByteOrder,
    /// Engineering value = raw × scale + offset. Default 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub scale: f64,
    /// Engineering value = raw × scale + offset. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: f64,
    /// Engineering unit, e.g. `degC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Poll group name. Default `default`.
    #[serde(default = "default_group")]
    pub poll_group: String,
    /// Report-by-exception deadband; none reports every poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
    /// With a deadband: report at least this often even without change
    /// (`max_report_interval = "5s"`).
    #[serde(
        default,
        with = "iiot_core::duration::human::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_report_interval: Option<Duration>,
    /// Write function policy.
    #[serde(default)]
    pub write_function: WriteFunction,
    /// This tag reads registers another tag reads too, on purpose (a register
    /// decoded two ways, say). Without it such an overlap is refused at load;
    /// `bit` tags on different bits of one register never count as overlapping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlap: bool,
}

fn default_unit() -> u8 {
    1
}
fn one() -> f64 {
    1.0
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_one(x: &f64) -> bool {
    x.to_bits() == 1.0f64.to_bits()
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(x: &f64) -> bool {
    x.to_bits() == 0
}
fn default_group() -> String {
    DEFAULT_GROUP.to_owned()
}

/// Name of the poll group tags use when they name none (1000 ms unless defined).
pub const DEFAULT_GROUP: &str = "default";

impl TagConfig {
    /// A tag at a 0-based address with defaults for everything else.
    pub fn new(name: impl Into<String>, area: Area, address: u16, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            unit_id: 1,
            area: Some(area),
            address: AddressSpec::Offset(address),
            data_type,
            bit: None,
            length: None,
            order: ByteOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            poll_group: default_group(),
            deadband: None,
            max_report_interval: None,
            write_function: WriteFunction::Auto,
            overlap: false,
        }
    }
}

/// A register map as written in a file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Poll groups by name. A `default` group of 1000 ms exists unless redefined.
    #[serde(default)]
    pub poll_groups: BTreeMap<String, PollGroupConfig>,
    /// The tags.
    #[serde(default)]
    pub tags: Vec<TagConfig>,
}

/// A validated tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// Tag path.
    pub name: TagPath,
    /// Unit id.
    pub unit_id: u8,
    /// Area.
    pub area: Area,
    /// 0-based start address.
    pub address: u16,
    /// Items (registers or bits) the tag occupies.
    pub width: u16,
    /// Type.
    pub data_type: DataType,
    /// Bit index for `bit` tags.
    pub bit: u8,
    /// String length in bytes.
    pub length: u16,
    /// Byte/word order.
    pub order: ByteOrder,
    /// Scale.
    pub scale: f64,
    /// Offset.
    pub offset: f64,
    /// Engineering unit.
    pub unit: Option<String>,
    /// Index of the poll group in [`RegisterMap::groups`].
    pub group: usize,
    /// Deadband.
    pub deadband: Option<Deadband>,
    /// Longest time without a report when a deadband holds values back.
    pub max_report_interval: Option<Duration>,
    /// Write function policy.
    pub write_function: WriteFunction,
}

impl Tag {
    /// Whether scale/offset change the raw value.
    pub fn is_scaled(&self) -> bool {
        !is_one(&self.scale) || !is_zero(&self.offset)
    }
}

/// A poll group after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroup {
    /// Name.
    pub name: String,
    /// Interval.
    pub interval: Duration,
}

/// A validated register map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegisterMap {
    groups: Vec<PollGroup>,
    tags: Vec<Tag>,
}

impl RegisterMap {
    /// Parses and validates a TOML map.
    ///
    /// # Errors
    /// [`MapError::Parse`] for bad TOML, otherwise as [`RegisterMap::from_config`].
    pub fn from_toml_str(text: &str) -> Result<Self, MapError> {
        let cfg: MapConfig = toml::from_str(text).map_err(|e| MapError::Parse {
            format: "toml",
            message: e.to_string(),
        })?;
        Self::from_config(&cfg)
    }

    /// Parses and validates a JSON map.
    ///
    /// # Errors
    /// [`MapError::Parse`] for bad JSON, otherwise as [`RegisterMap::from_config`].
    pub fn from_json_str(text: &str) -> Result<Self, MapError> {
        let cfg: MapConfig = serde_json::from_str(text).map_err(|e| MapError::Parse {
            format: "json",
            message: e.to_string(),
        })?;
        Self::from_config(&cfg)
    }

    /// Validates a map.
    ///
    /// # Errors
    /// The first rule broken: [`MapError::Tag`] naming the tag, or
    /// [`MapError::GroupInterval`].
    pub fn from_config(cfg: &MapConfig) -> Result<Self, MapError> {
        let mut groups = Vec::new();
        let mut has_default = false;
        for (name, g) in &cfg.poll_groups {
            if g.interval.is_zero() {
                return Err(MapError::GroupInterval {
                    group: name.clone(),
                });
            }
            has_default |= name == DEFAULT_GROUP;
            groups.push(PollGroup {
                name: name.clone(),
                interval: g.interval,
            });
        }
        if !has_default {
            groups.push(PollGroup {
                name: DEFAULT_GROUP.to_owned(),
                interval: Duration::from_secs(1),
            });
        }
        let mut seen = HashSet::new();
        let mut tags = Vec::with_capacity(cfg.tags.len());
        for t in &cfg.tags {
            let tag = validate_tag(t, &groups).map_err(|problem| MapError::Tag {
                tag: t.name.clone(),
                problem,
            })?;
            if !seen.insert(tag.name.clone()) {
                return Err(MapError::Tag {
                    tag: t.name.clone(),
                    problem: TagProblem::Duplicate,
                });
            }
            tags.push(tag);
        }
        check_overlaps(&cfg.tags, &tags)?;
        Ok(Self { groups, tags })
    }

    /// The tags, in map order.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }
    /// The poll groups.
    pub fn groups(&self) -> &[PollGroup] {
        &self.groups
    }
    /// The tag with this name and its index.
    pub fn find(&self, name: &str) -> Option<(usize, &Tag)> {
        self.tags
            .iter()
            .enumerate()
            .find(|(_, t)| t.name.as_str() == name)
    }
}

/// The Modicon notation of a 0-based address (`40013`, `312345`).
pub fn notation(area: Area, address: u16) -> String {
    let prefix = match area {
        Area::Coil => '0',
        Area::DiscreteInput => '1',
        Area::InputRegister => '3',
        Area::HoldingRegister => '4',
    };
    let one_based = u32::from(address) + 1;
    if one_based <= 9999 {
        format!("{prefix}{one_based:04}")
    } else {
        format!("{prefix}{one_based:05}")
    }
}

/// Two tags that read the same register (or coil), unless one says `overlap =
/// true` or both are `bit` tags of different bits. Sorted sweep: O(n log n).
fn check_overlaps(configs: &[TagConfig], tags: &[Tag]) -> Result<(), MapError> {
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| (tags[i].unit_id, tags[i].area as u8, tags[i].address));
    // Tags whose range is still open at the current address (same unit and area).
    let mut open: Vec<usize> = Vec::new();
    for &i in &order {
        let t = &tags[i];
        open.retain(|&j| {
            let o = &tags[j];
            o.unit_id == t.unit_id
                && o.area == t.area
                && u32::from(o.address) + u32::from(o.width.max(1)) > u32::from(t.address)
        });
        for &j in &open {
            let o = &tags[j];
            let bits_apart = t.data_type == DataType::Bit
                && o.data_type == DataType::Bit
                && o.address == t.address
                && o.bit != t.bit;
            if bits_apart || configs[i].overlap || configs[j].overlap {
                continue;
            }
            return Err(MapError::Overlap {
                tag: configs[i].name.clone(),
                other: configs[j].name.clone(),
                register: notation(t.area, t.address.max(o.address)),
            });
        }
        open.push(i);
    }
    Ok(())
}

/// Parses Modicon notation into area and 0-based address.
///
/// # Errors
/// [`TagProblem::Notation`] when the text is not 5 or 6 digits of a known area with a
/// one-based address in range.
pub fn parse_notation(text: &str) -> Result<(Area, u16), TagProblem> {
    let bad = || TagProblem::Notation {
        text: text.to_owned(),
    };
    if !(text.len() == 5 || text.len() == 6) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let area = match text.as_bytes()[0] {
        b'0' => Area::Coil,
        b'1' => Area::DiscreteInput,
        b'3' => Area::InputRegister,
        b'4' => Area::HoldingRegister,
        _ => return Err(bad()),
    };
    let one_based: u32 = text[1..].parse().map_err(|_| bad())?;
    if one_based == 0 || one_based > 65_536 {
        return Err(bad());
    }
    let address = u16::try_from(one_based - 1).map_err(|_| bad())?;
    Ok((area, address))
}

fn validate_tag(t: &TagConfig, groups: &[PollGroup]) -> Result<Tag, TagProblem> {
    let name = TagPath::new(t.name.clone()).map_err(TagProblem::Name)?;
    let (area, address) = match &t.address {
        AddressSpec::Offset(a) => (t.area.ok_or(TagProblem::MissingArea)?, *a),
        AddressSpec::Notation(text) => {
            let (implied, a) = parse_notation(text)?;
            if let Some(given) = t.area
                && given != implied
            {
                return Err(TagProblem::AreaConflict { given, implied });
            }
            (implied, a)
        }
    };
    let dt = t.data_type;
    let type_ok = if area.is_bits() {
        dt == DataType::Bool
    } else {
        dt != DataType::Bool
    };
    if !type_ok {
        return Err(TagProblem::TypeArea {
            data_type: dt,
            area,
        });
    }
    let bit = match (dt, t.bit) {
        (DataType::Bit, Some(b)) if b <= 15 => b,
        (_, None) if dt != DataType::Bit => 0,
        (_, b) => return Err(TagProblem::Bit { bit: b }),
    };
    let length = match (dt, t.length) {
        (DataType::String, Some(l)) if (1..=250).contains(&l) => l,
        (_, None) if dt != DataType::String => 0,
        (_, l) => return Err(TagProblem::Length { length: l }),
    };
    if dt == DataType::String && t.order.word_swap() {
        return Err(TagProblem::StringOrder { order: t.order });
    }
    let scaled = !is_one(&t.scale) || !is_zero(&t.offset);
    if !t.scale.is_finite() || t.scale == 0.0 || !t.offset.is_finite() {
        return Err(TagProblem::Scaling {
            scale: t.scale,
            offset: t.offset,
        });
    }
    if !dt.is_numeric() && (scaled || t.deadband.is_some()) {
        return Err(TagProblem::NotNumeric);
    }
    if let Some(Deadband::Absolute(d) | Deadband::Percent(d)) = t.deadband
        && (!d.is_finite() || d < 0.0)
    {
        return Err(TagProblem::Deadband);
    }
    if t.max_report_interval.is_some_and(|d| d.is_zero()) {
        return Err(TagProblem::ReportInterval);
    }
    let width = dt.width(length);
    if u32::from(address) + u32::from(width) > 65_536 {
        return Err(TagProblem::AddressOverflow { address, width });
    }
    let group = groups
        .iter()
        .position(|g| g.name == t.poll_group)
        .ok_or_else(|| TagProblem::UnknownGroup {
            group: t.poll_group.clone(),
        })?;
    Ok(Tag {
        name,
        unit_id: t.unit_id,
        area,
        address,
        width,
        data_type: dt,
        bit,
        length,
        order: t.order,
        scale: t.scale,
        offset: t.offset,
        unit: t.unit.clone(),
        group,
        deadband: t.deadband,
        max_report_interval: t.max_report_interval,
        write_function: t.write_function,
    })
}

#[cfg(test)]
mod tests;
