//! Text hygiene for prompts read from sources: UTF-8 decoding with a reason on failure, a
//! leading byte-order mark and CRLF accepted, Unicode NFC normalisation, control characters
//! removed (tabs and line breaks become spaces), surrounding whitespace trimmed.

use unicode_normalization::UnicodeNormalization;

/// Decodes one line or field; `Err` carries the reject reason.
pub fn decode(bytes: &[u8]) -> Result<&str, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))
}

/// The cleaned prompt: NFC, no control characters, trimmed.
pub fn clean(text: &str) -> String {
    let spaced: String = text
        .chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    spaced.nfc().collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_crlf_nfc_and_controls() {
        assert_eq!(decode(b"\xEF\xBB\xBFa cat\r").unwrap(), "a cat");
        assert!(decode(b"a \xFF cat")
            .unwrap_err()
            .contains("invalid UTF-8 at byte 2"));
        // "e" + combining acute -> precomposed é
        assert_eq!(clean("cafe\u{301}"), "caf\u{e9}");
        assert_eq!(clean("  a\u{7}b\tc\u{9f} "), "ab c");
    }
}
