//! The two byte-range grammars of the registry protocol.
//!
//! - `Range: bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX` on blob reads.
//! - `Content-Range: START-END` on chunked uploads (the distribution-spec form,
//!   without a unit); `bytes START-END/TOTAL` and `bytes=START-END` are also
//!   accepted since some clients send them.

/// A request for part of a blob, before it is resolved against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `START-END`, inclusive; END may run past the blob and is clamped;
    /// an END before START is never satisfiable.
    FromTo(u64, u64),
    /// `START-`.
    From(u64),
    /// `-N`: the last N bytes.
    Suffix(u64),
}

/// Outcome of resolving a [`ByteRange`] against a blob size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Serve bytes `start..end` (end exclusive).
    Partial { start: u64, end: u64 },
    /// The range cannot be satisfied: answer 416.
    Unsatisfiable,
}

fn num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits past u64 are a position past any blob: the largest one says
    // so (unsatisfiable as a start, clamped as an end).
    Some(s.parse().unwrap_or(u64::MAX))
}

/// Parses a `Range` header. `None` means malformed or multi-range; such a
/// header is ignored and the whole blob is served (RFC 9110 permits that).
/// A well-formed range that ends before it starts is kept, to be refused.
pub fn parse_range(header: &str) -> Option<ByteRange> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    match (a.is_empty(), b.is_empty()) {
        (true, false) => num(b).map(ByteRange::Suffix),
        (false, true) => num(a).map(ByteRange::From),
        // An end before the start is invalid; RFC 9110 lets a server
        // ignore or reject it, and it is rejected (416) when resolved.
        (false, false) => Some(ByteRange::FromTo(num(a)?, num(b)?)),
        (true, true) => None,
    }
}

impl ByteRange {
    pub fn resolve(self, size: u64) -> Resolved {
        let (start, end) = match self {
            ByteRange::FromTo(s, e) => (s, e.saturating_add(1).min(size)),
            ByteRange::From(s) => (s, size),
            ByteRange::Suffix(0) => return Resolved::Unsatisfiable,
            ByteRange::Suffix(n) => (size.saturating_sub(n), size),
        };
        if start >= size || start >= end {
            Resolved::Unsatisfiable
        } else {
            Resolved::Partial { start, end }
        }
    }
}

/// Parses an upload `Content-Range` into an inclusive `(start, end)`.
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let h = header.trim();
    let h = h
        .strip_prefix("bytes=")
        .or_else(|| h.strip_prefix("bytes "))
        .unwrap_or(h);
    let h = h.split_once('/').map_or(h, |(r, _total)| r);
    let (a, b) = h.split_once('-')?;
    let (s, e) = (num(a.trim())?, num(b.trim())?);
    // `end + 1` must be a size: u64::MAX is no end.
    (s <= e && e < u64::MAX).then_some((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9"), Some(ByteRange::FromTo(0, 9)));
        assert_eq!(parse_range("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(parse_range("bytes=-3"), Some(ByteRange::Suffix(3)));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "0-1",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
        assert_eq!(
            ByteRange::FromTo(0, 9).resolve(5),
            Resolved::Partial { start: 0, end: 5 }
        );
        assert_eq!(ByteRange::From(5).resolve(5), Resolved::Unsatisfiable);
        assert_eq!(
            ByteRange::Suffix(10).resolve(4),
            Resolved::Partial { start: 0, end: 4 }
        );
        assert_eq!(ByteRange::Suffix(0).resolve(4), Resolved::Unsatisfiable);
        assert_eq!(ByteRange::FromTo(0, 0).resolve(0), Resolved::Unsatisfiable);
        assert_eq!(parse_range("bytes=500-0"), Some(ByteRange::FromTo(500, 0)));
        let huge = parse_range("bytes=99999999999999999999-").unwrap();
        assert_eq!(huge.resolve(110), Resolved::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=10-99999999999999999999")
                .unwrap()
                .resolve(110),
            Resolved::Partial {
                start: 10,
                end: 110
            }
        );
        assert_eq!(
            ByteRange::FromTo(500, 0).resolve(2048),
            Resolved::Unsatisfiable
        );
        assert_eq!(
            ByteRange::FromTo(1, 0).resolve(2048),
            Resolved::Unsatisfiable
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(parse_content_range("bytes=10-19"), Some((10, 19)));
        for bad in ["", "5", "9-1", "-1", "a-b", "1-", "0-18446744073709551615"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
