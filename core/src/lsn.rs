//! PostgreSQL write-ahead-log positions (`pg_lsn`), as the server prints them.

use std::fmt;
use std::str::FromStr;

/// A WAL position: a 64-bit byte offset that PostgreSQL writes as two hexadecimal halves, `HI/LO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected HEX/HEX with 1 to 8 hex digits on each side")]
pub struct LsnError(pub String);

impl Lsn {
    /// Bytes from `other` up to `self`, or 0 when `other` is already at or past `self`.
    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }

    /// Parses `HEX/HEX` from raw bytes, each half 1 to 8 hex digits, nothing else around them.
    pub fn parse_bytes(text: &[u8]) -> Option<Lsn> {
        let slash = text.iter().position(|&b| b == b'/')?;
        let hi = parse_half(&text[..slash])?;
        let lo = parse_half(&text[slash + 1..])?;
        Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

fn parse_half(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        // At most 8 digits, so the value fits in 32 bits and the shift never overflows.
        Some((acc << 4) | d)
    })
}

impl FromStr for Lsn {
    type Err = LsnError;

    fn from_str(s: &str) -> Result<Lsn, LsnError> {
        Lsn::parse_bytes(s.as_bytes()).ok_or_else(|| LsnError(s.to_owned()))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_like_postgresql() {
        let lsn: Lsn = "0/3000060".parse().unwrap();
        assert_eq!(lsn, Lsn(0x0300_0060));
        assert_eq!(lsn.to_string(), "0/3000060");
        let big: Lsn = "16/b374d848".parse().unwrap();
        assert_eq!(big.to_string(), "16/B374D848");
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/3000060/1",
            "123456789/0",
            "0/123456789",
            "g/0",
            " 0/1",
            "0/1 ",
            "+1/0",
            "-1/0",
            "0x1/0",
            "0/١",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn distance_saturates_at_zero() {
        assert_eq!(Lsn(100).bytes_after(Lsn(40)), 60);
        assert_eq!(Lsn(40).bytes_after(Lsn(100)), 0);
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(v in any::<u64>()) {
            let lsn = Lsn(v);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }

        #[test]
        fn parse_never_panics(s in ".{0,24}") {
            let _ = s.parse::<Lsn>();
        }
    }
}
