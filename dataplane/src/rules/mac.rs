//! MAC addresses as text: `02:66:67:00:00:01`.

use super::MacAddr;

/// Parses six two-digit hex octets separated by `:` (or all by `-`), in
/// either case. Anything else is `None`.
pub fn parse_mac(text: &str) -> Option<MacAddr> {
    let separator = if text.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = text.split(separator);
    for octet in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *octet = u8::from_str_radix(part, 16).ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(mac),
    }
}

/// Formats as lower-case `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &MacAddr) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Group bit clear: the address names one station (broadcast and multicast
/// addresses have it set). All zeros is unicast by this test but no station
/// has it; check that separately.
pub fn is_unicast_mac(mac: &MacAddr) -> bool {
    mac[0] & 0x01 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let mac = [0x02, 0x66, 0x67, 0x00, 0x01, 0xab];
        assert_eq!(parse_mac("02:66:67:00:01:ab"), Some(mac));
        assert_eq!(parse_mac("02:66:67:00:01:AB"), Some(mac));
        assert_eq!(parse_mac("02-66-67-00-01-ab"), Some(mac));
        assert_eq!(format_mac(&mac), "02:66:67:00:01:ab");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "02:66:67:00:01",
            "02:66:67:00:01:ab:cd",
            "02:66:67:00:01:a",
            "02:66:67:00:01:abc",
            "02:66:67:00:01:zz",
            "02:66:67-00:01:ab",
            "02:66:67:00:01:+a",
            "0266.6700.01ab",
            "02:66:67:00:01:ab:",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unicast_is_the_group_bit() {
        assert!(is_unicast_mac(&[0x02, 0, 0, 0, 0, 1]));
        assert!(!is_unicast_mac(&[0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(!is_unicast_mac(&[0xff; 6]));
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(mac: [u8; 6]) {
            proptest::prop_assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,24}") {
            let _ = parse_mac(&text);
        }
    }
}
