//! PostgreSQL's `pg_lsn` text (DESIGN 6): `HEX/HEX`, each half 1 to 8 hex digits, nothing around them.

use pg_status_core::lsn::Lsn;

fn hex_value(b: u8) -> Option<u64> {
    let value = match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => return None,
    };
    Some(u64::from(value))
}

/// One half of the text: 1 to 8 hex digits.
fn half(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let mut value = 0;
    for &d in digits {
        value = value * 16 + hex_value(d)?;
    }
    Some(value)
}

/// The position `text` spells, or `None` when it is not exactly `HEX/HEX`.
pub fn parse(text: &[u8]) -> Option<Lsn> {
    let slash = text.iter().position(|&b| b == b'/')?;
    let high = half(&text[..slash])?;
    let low = half(&text[slash + 1..])?;
    Some(Lsn(high << 32 | low))
}

/// How PostgreSQL prints a valid LSN text: each half in uppercase without leading zeros (`0/3000060`).
pub fn canonical(text: &[u8]) -> String {
    let mut halves = Vec::new();
    for part in text.split(|&b| b == b'/') {
        let first = part.iter().position(|&b| b != b'0').unwrap_or(part.len().saturating_sub(1));
        halves.push(String::from_utf8_lossy(&part[first..]).to_ascii_uppercase());
    }
    halves.join("/")
}

/// `position` printed as PostgreSQL does: the high and low 32 bits in uppercase hex, `/` between.
pub fn show(position: Lsn) -> String {
    format!("{:X}/{:X}", position.0 >> 32, position.0 % (1 << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_prints_as_postgresql_does() {
        assert_eq!(parse(b"0/3000060"), Some(Lsn(0x300_0060)));
        assert_eq!(parse(b"16/b374d848"), Some(Lsn(0x16_B374_D848)));
        assert_eq!(parse(b"FFFFFFFF/FFFFFFFF"), Some(Lsn(u64::MAX)));
        for bad in ["", "/", "0/", "/0", "0", "0/1/2", "123456789/0", "g/0", " 0/1", "+1/0", "0x1/0"] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(canonical(b"00/0abc"), "0/ABC");
        assert_eq!(show(Lsn(0x16_B374_D848)), "16/B374D848");
        assert_eq!(show(Lsn(0)), "0/0");
    }
}
