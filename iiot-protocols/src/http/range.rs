//! `Content-Range` (RFC 9110, section 14.4) for byte ranges.

/// A parsed `Content-Range: bytes ...` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentRange {
    /// `bytes {first}-{last}/{complete}` (`complete` is `None` for `*`).
    Bytes {
        first: u64,
        last: u64,
        complete: Option<u64>,
    },
    /// `bytes */{complete}`, sent with 416 Range Not Satisfiable.
    Unsatisfied { complete: u64 },
}

impl ContentRange {
    /// Parses the header value; `None` when it is not a valid byte range
    /// (including `last < first` or `last >= complete`).
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let (unit, rest) = value.trim().split_once(' ')?;
        if !unit.eq_ignore_ascii_case("bytes") {
            return None;
        }
        let (range, complete) = rest.trim_start().split_once('/')?;
        let complete = match complete {
            "*" => None,
            n => Some(number(n)?),
        };
        if range == "*" {
            return complete.map(|complete| Self::Unsatisfied { complete });
        }
        let (first, last) = range.split_once('-')?;
        let (first, last) = (number(first)?, number(last)?);
        if last < first || complete.is_some_and(|c| last >= c) {
            return None;
        }
        Some(Self::Bytes {
            first,
            last,
            complete,
        })
    }
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_byte_ranges() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/1000"),
            Some(ContentRange::Bytes {
                first: 100,
                last: 199,
                complete: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-0/*"),
            Some(ContentRange::Bytes {
                first: 0,
                last: 0,
                complete: None
            })
        );
        assert_eq!(
            ContentRange::parse("Bytes */1000"),
            Some(ContentRange::Unsatisfied { complete: 1000 })
        );
    }

    #[test]
    fn refuses_broken_ranges() {
        for bad in [
            "",
            "bytes",
            "bytes 1-2",
            "items 0-1/2",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes -1-2/3",
            "bytes +1-2/3",
            "bytes */*",
            "bytes 1-/3",
            "bytes 0-18446744073709551616/*",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad:?}");
        }
    }
}
