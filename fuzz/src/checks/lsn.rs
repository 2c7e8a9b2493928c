//! Target `lsn`: PostgreSQL's LSN text, parsed and printed.

use pg_status_core::lsn::Lsn;
use pg_status_reference::lsn;

/// Target `lsn`. Input: the bytes are the text to parse; their first 8 bytes (zero-padded, little-endian)
/// are also a position to print.
///
/// Checks: parsing never panics and accepts exactly `HEX/HEX` with 1-8 hex digits a side (bytes and `str`
/// parsing agree); a parsed position prints as the input in canonical form (uppercase, no leading zeros);
/// every position prints canonically and parses back to itself.
pub fn check_lsn(data: &[u8]) {
    let parsed = Lsn::parse_bytes(data);
    let shown = String::from_utf8_lossy(data);
    assert_eq!(parsed, lsn::parse(data), "Lsn::parse_bytes({shown:?})");
    if let Ok(text) = std::str::from_utf8(data) {
        let from_str = text.parse::<Lsn>();
        if let Err(error) = &from_str {
            let _ = error.to_string();
        }
        assert_eq!(from_str.ok(), parsed, "{text:?}.parse::<Lsn>() disagrees with Lsn::parse_bytes");
    }
    if let Some(lsn) = parsed {
        assert_eq!(lsn.to_string(), lsn::canonical(data), "{shown:?} parsed as {lsn:?} prints differently");
    }

    let mut word = [0u8; 8];
    let len = data.len().min(8);
    word[..len].copy_from_slice(&data[..len]);
    let lsn = Lsn(u64::from_le_bytes(word));
    let printed = lsn.to_string();
    assert_eq!(lsn::parse(printed.as_bytes()), Some(lsn), "{lsn:?} prints as {printed:?}");
    assert_eq!(printed.parse::<Lsn>(), Ok(lsn), "{printed:?} does not parse back");
    assert_eq!(lsn::canonical(printed.as_bytes()), printed, "{lsn:?} prints non-canonically");
}
