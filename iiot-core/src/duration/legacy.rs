//! The numeric duration keys of config files written before human strings, and the
//! rewrite that keeps such files working (with a deprecation each).
//!
//! ```
//! use iiot_core::duration::legacy::{LegacyKey, LegacyUnit, upgrade_toml};
//!
//! const KEYS: &[LegacyKey] = &[
//!     LegacyKey::duration("keepalive_s", "keepalive", LegacyUnit::Secs),
//!     LegacyKey::duration("timeout", "timeout", LegacyUnit::Millis),
//!     LegacyKey::renamed("broker_url", "url"),
//! ];
//! let old = "[mqtt]\nbroker_url = \"mqtt://b\"\nkeepalive_s = 30 # s\n[poll]\ntimeout = 1500\n";
//! let up = upgrade_toml(old, KEYS);
//! assert_eq!(
//!     up.text,
//!     "[mqtt]\nurl = \"mqtt://b\"\nkeepalive = \"30s\" # s\n[poll]\ntimeout = \"1s 500ms\"\n"
//! );
//! assert_eq!(up.deprecations.len(), 3);
//! assert_eq!(up.deprecations[1].key, "mqtt.keepalive_s");
//! assert_eq!(up.deprecations[1].line, 3);
//! assert_eq!(up.deprecations[1].to_string(),
//!     "key \"mqtt.keepalive_s\" (line 3): `keepalive_s = 30` is deprecated, write `keepalive = \"30s\"`");
//! ```
//!
//! The rewrite works on text, so line numbers of later errors stay those of the file.
//! It recognises `key = value` at the start of a line and inside inline tables, with
//! dotted keys and comments; values in strings (multi-line ones included) are never
//! touched. A key matches by
//! its last segment, so one table serves a struct wherever a file nests it.

use std::fmt;
use std::time::Duration;

/// The unit an old numeric value was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LegacyUnit {
    /// Microseconds (the RTU `inter_frame_delay`).
    Micros,
    /// Milliseconds (most keys).
    Millis,
    /// Seconds.
    Secs,
}

impl LegacyUnit {
    fn duration(self, n: u64) -> Duration {
        match self {
            Self::Micros => Duration::from_micros(n),
            Self::Millis => Duration::from_millis(n),
            Self::Secs => Duration::from_secs(n),
        }
    }
}

/// One key of an old config form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyKey {
    /// The key as old files write it (last segment).
    pub key: &'static str,
    /// The key today.
    pub new_key: &'static str,
    /// For a duration: the unit of the old numeric value (`None`: only renamed).
    pub unit: Option<LegacyUnit>,
}

impl LegacyKey {
    /// A duration once written as a number of `unit` under `key`, now a human
    /// string under `new_key` (which may be the same key).
    pub const fn duration(key: &'static str, new_key: &'static str, unit: LegacyUnit) -> Self {
        Self {
            key,
            new_key,
            unit: Some(unit),
        }
    }

    /// A key only renamed; the value stays as written.
    pub const fn renamed(key: &'static str, new_key: &'static str) -> Self {
        Self {
            key,
            new_key,
            unit: None,
        }
    }
}

/// One old form found and rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// 1-based line.
    pub line: usize,
    /// The dotted key as written, with its table, e.g. `mqtt.keepalive_s`.
    pub key: String,
    /// What the file says, e.g. `keepalive_s = 30`.
    pub old: String,
    /// What to write instead, e.g. `keepalive = "30s"`.
    pub new: String,
}

impl fmt::Display for Deprecation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?} (line {}): `{}` is deprecated, write `{}`",
            self.key, self.line, self.old, self.new
        )
    }
}

/// A config text with its old forms rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    /// The text to parse: the same lines, old forms replaced.
    pub text: String,
    /// Every replacement, in file order.
    pub deprecations: Vec<Deprecation>,
}

/// Rewrites the old forms of `keys` in TOML `text`: numbers under duration keys become
/// human strings in the old unit, renamed keys get their new names.
pub fn upgrade_toml(text: &str, keys: &[LegacyKey]) -> Upgraded {
    let mut out = String::with_capacity(text.len() + 16);
    let mut deprecations = Vec::new();
    let mut table = String::new();
    // Inside a multi-line string (`"""` or `'''`): lines are content, never keys.
    let mut in_string: Option<&str> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if let Some(delim) = in_string {
            if line.matches(delim).count() % 2 == 1 {
                in_string = None;
            }
            out.push_str(line);
            continue;
        }
        let opens = ["\"\"\"", "'''"]
            .into_iter()
            .find(|d| line.matches(d).count() % 2 == 1);
        if let Some(delim) = opens {
            // The part before the string may hold a key (`text = """`): copied as is.
            in_string = Some(delim);
            out.push_str(line);
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            table = header_name(trimmed);
            out.push_str(line);
            continue;
        }
        out.push_str(&upgrade_line(line, i + 1, &table, keys, &mut deprecations));
    }
    Upgraded {
        text: out,
        deprecations,
    }
}

/// `a.b` of `[a.b]` or `[[a.b]]`, spaces and quotes dropped.
fn header_name(line: &str) -> String {
    let inner = line.trim_start_matches('[');
    let end = inner.find(']').unwrap_or(inner.len());
    inner[..end]
        .split('.')
        .map(|s| s.trim().trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".")
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// One line: scans `key = value` pairs outside strings and comments.
fn upgrade_line(
    line: &str,
    number: usize,
    table: &str,
    keys: &[LegacyKey],
    found: &mut Vec<Deprecation>,
) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 8);
    // Keys of the inline tables we are inside of.
    let mut nesting: Vec<String> = Vec::new();
    let mut copied = 0;
    let mut pos = 0;
    let mut expect_key = true;
    while pos < bytes.len() {
        let ch = bytes[pos];
        match ch {
            b'#' => break,
            b'"' | b'\'' => {
                pos = skip_string(bytes, pos);
                expect_key = false;
                continue;
            }
            b'{' | b',' => {
                expect_key = true;
                pos += 1;
                continue;
            }
            b'}' => {
                nesting.pop();
                expect_key = false;
                pos += 1;
                continue;
            }
            b'[' | b']' | b'=' => {
                expect_key = false;
                pos += 1;
                continue;
            }
            ch if ch.is_ascii_whitespace() => {
                pos += 1;
                continue;
            }
            _ => {}
        }
        if !(expect_key && is_key_char(ch)) {
            pos += 1;
            continue;
        }
        // A (possibly dotted) key.
        let key_start = pos;
        while pos < bytes.len() && (is_key_char(bytes[pos]) || bytes[pos] == b'.') {
            pos += 1;
        }
        let key_end = pos;
        let mut at = pos;
        while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
            at += 1;
        }
        if at >= bytes.len() || bytes[at] != b'=' {
            expect_key = false;
            continue;
        }
        at += 1;
        while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
            at += 1;
        }
        let dotted = &line[key_start..key_end];
        let (prefix, last) = match dotted.rfind('.') {
            Some(p) => (&dotted[..=p], &dotted[p + 1..]),
            None => ("", dotted),
        };
        if at < bytes.len() && bytes[at] == b'{' {
            nesting.push(dotted.to_owned());
        }
        expect_key = false;
        let Some(legacy) = keys.iter().find(|k| k.key == last) else {
            pos = at;
            continue;
        };
        let value_start = at;
        let mut value_end = at;
        while value_end < bytes.len()
            && (bytes[value_end].is_ascii_digit() || bytes[value_end] == b'_')
        {
            value_end += 1;
        }
        let is_number = value_end > value_start
            && (value_end == bytes.len()
                || matches!(
                    bytes[value_end],
                    b' ' | b'\t' | b',' | b'}' | b'#' | b'\r' | b'\n'
                ));
        let number_value = is_number
            .then(|| {
                line[value_start..value_end]
                    .replace('_', "")
                    .parse::<u64>()
                    .ok()
            })
            .flatten();
        let new_value = match (legacy.unit, number_value) {
            (Some(unit), Some(n)) => Some(format!("\"{}\"", super::format(unit.duration(n)))),
            _ => None,
        };
        if new_value.is_none() && legacy.new_key == last {
            pos = at;
            continue;
        }
        let mut full = String::from(table);
        for k in nesting.iter().take(
            nesting
                .len()
                .saturating_sub(usize::from(bytes.get(at) == Some(&b'{'))),
        ) {
            push_segment(&mut full, k);
        }
        push_segment(&mut full, dotted);
        let old_value_end = if new_value.is_some() { value_end } else { at };
        let new_key = format!("{prefix}{}", legacy.new_key);
        let replacement = match &new_value {
            Some(v) => format!("{new_key} = {v}"),
            None => format!("{new_key} = "),
        };
        out.push_str(&line[copied..key_start]);
        out.push_str(&replacement);
        copied = old_value_end;
        let shown_new = match &new_value {
            Some(v) => format!("{new_key} = {v}"),
            None => format!("{new_key} = {}", value_text(line, at)),
        };
        found.push(Deprecation {
            line: number,
            key: full,
            old: format!("{dotted} = {}", value_text(line, at)),
            new: shown_new,
        });
        pos = old_value_end;
    }
    out.push_str(&line[copied..]);
    out
}

fn push_segment(path: &mut String, seg: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(seg);
}

/// The value starting at `start`, up to a comment, comma or closing brace.
fn value_text(line: &str, start: usize) -> &str {
    let b = line.as_bytes();
    let mut end = start;
    if end < b.len() && (b[end] == b'"' || b[end] == b'\'') {
        end = skip_string(b, end);
    } else {
        while end < b.len() && !matches!(b[end], b',' | b'}' | b'#' | b'\r' | b'\n') {
            end += 1;
        }
    }
    line[start..end].trim_end()
}

/// The index after the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote == b'"' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEYS: &[LegacyKey] = &[
        LegacyKey::duration("window", "window", LegacyUnit::Millis),
        LegacyKey::duration("max_age", "max_age", LegacyUnit::Millis),
        LegacyKey::duration("keepalive_ms", "keepalive", LegacyUnit::Millis),
        LegacyKey::duration("inter_frame_delay", "inter_frame_delay", LegacyUnit::Micros),
        LegacyKey::renamed("broker_url", "url"),
    ];

    #[test]
    fn inline_tables_dotted_keys_and_underscores() {
        let t = "[outbox]\nmax_age = 604_800_000   # ms\ndurability = { group_commit = { window = 10 } }\n";
        let up = upgrade_toml(t, KEYS);
        assert_eq!(
            up.text,
            "[outbox]\nmax_age = \"7days\"   # ms\ndurability = { group_commit = { window = \"10ms\" } }\n"
        );
        assert_eq!(up.deprecations[0].key, "outbox.max_age");
        assert_eq!(
            up.deprecations[1].key,
            "outbox.durability.group_commit.window"
        );
        assert_eq!(up.deprecations[1].line, 3);

        let up = upgrade_toml("mqtt.keepalive_ms = 30000\n", KEYS);
        assert_eq!(up.text, "mqtt.keepalive = \"30s\"\n");
        assert_eq!(up.deprecations[0].key, "mqtt.keepalive_ms");
    }

    #[test]
    fn microseconds_stay_microseconds() {
        let up = upgrade_toml("[modbus.transport.rtu]\ninter_frame_delay = 2000\n", KEYS);
        assert_eq!(
            up.text,
            "[modbus.transport.rtu]\ninter_frame_delay = \"2ms\"\n"
        );
    }

    #[test]
    fn leaves_strings_comments_new_forms_and_other_keys_alone() {
        let t = concat!(
            "name = \"window = 10\"\n",
            "# max_age = 5\n",
            "max_age = \"7d\"\n",
            "retries = 3\n",
            "list = [\"keepalive_ms = 3\", 'x']\n",
            "max_ages = 4\n",
        );
        let up = upgrade_toml(t, KEYS);
        assert_eq!(up.text, t);
        assert!(up.deprecations.is_empty());
    }

    #[test]
    fn multi_line_strings_are_content() {
        let t = "note = \"\"\"\nmax_age = 5\n\"\"\"\nmax_age = 7\nraw = '''\nwindow = 1\n'''\n";
        let up = upgrade_toml(t, KEYS);
        assert_eq!(
            up.text,
            "note = \"\"\"\nmax_age = 5\n\"\"\"\nmax_age = \"7ms\"\nraw = '''\nwindow = 1\n'''\n"
        );
        assert_eq!(up.deprecations.len(), 1);
        assert_eq!(up.deprecations[0].line, 4);
    }

    #[test]
    fn renames_keep_the_value() {
        let up = upgrade_toml("[mqtt]\nbroker_url = \"mqtt://h:1\" # the broker\n", KEYS);
        assert_eq!(up.text, "[mqtt]\nurl = \"mqtt://h:1\" # the broker\n");
        assert_eq!(up.deprecations[0].new, "url = \"mqtt://h:1\"");
        // A renamed duration key that already holds a human string.
        let up = upgrade_toml("keepalive_ms = \"5s\"\n", KEYS);
        assert_eq!(up.text, "keepalive = \"5s\"\n");
    }

    proptest! {
        /// The rewrite never changes the number of lines, so every later error
        /// still names the line of the file.
        #[test]
        fn line_count_is_preserved(text in "([a-z_ ={},\"#0-9]{0,30}\n){0,8}") {
            let up = upgrade_toml(&text, KEYS);
            prop_assert_eq!(up.text.lines().count(), text.lines().count());
        }

        /// A number in the old unit becomes a string that parses to the same duration.
        #[test]
        fn numbers_keep_their_value(n in 0u64..10_000_000_000) {
            let up = upgrade_toml(&format!("max_age = {n}\n"), KEYS);
            let v = up.text.trim().strip_prefix("max_age = ").unwrap().trim_matches('"').to_owned();
            prop_assert_eq!(super::super::parse(&v).unwrap(), Duration::from_millis(n));
        }
    }
}
