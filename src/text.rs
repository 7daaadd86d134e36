//! Free text that people read: access-key names and details, and anything
//! the CLI prints from the store.
//!
//! A name holding ESC, a newline or NUL can repaint a terminal or forge rows
//! in `authgate key list`; a bidirectional override (U+202E) makes text read
//! differently from what it is ("Trojan Source", CVE-2021-42574). The API
//! and `key create` refuse both; the CLI escapes whatever it prints, because
//! rows stored before the check could still hold them.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest access-key `name`, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest access-key `detail`, in characters.
pub const MAX_DETAIL_CHARS: usize = 4096;

/// Appends `value` in decimal (no allocation, no formatting machinery: the
/// access log and the RateLimit headers write numbers on every request).
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit: fits in u8.
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Why a name or detail is refused. Carries no part of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextProblem {
    /// Longer than the field allows (in characters).
    TooLong,
    /// A control character (Unicode general category Cc: C0, DEL, C1).
    Control,
    /// A bidirectional formatting character (embedding, override, isolate or mark).
    Bidi,
}

/// Bidirectional formatting characters: LRE, RLE, PDF, LRO, RLO
/// (U+202A..U+202E), LRI, RLI, FSI, PDI (U+2066..U+2069), LRM, RLM and ALM
/// (Unicode UAX #9, table 1).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Checks a key name or detail: at most `max_chars` characters, none of
/// them a control character (`char::is_control` is exactly category Cc) or
/// a bidirectional formatting character.
pub fn check_label(value: &str, max_chars: usize) -> Result<(), TextProblem> {
    let mut count = 0usize;
    for c in value.chars() {
        if c.is_control() {
            return Err(TextProblem::Control);
        }
        if is_bidi_control(c) {
            return Err(TextProblem::Bidi);
        }
        count += 1;
    }
    if count > max_chars {
        return Err(TextProblem::TooLong);
    }
    Ok(())
}

/// Characters a terminal does not show as themselves: controls, bidi
/// formatting, line and paragraph separators and the invisible format
/// characters (zero-width spaces and joiners, word joiner, BOM, soft hyphen).
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || is_bidi_control(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `value` safe to print on a terminal: each character that is not shown as
/// itself becomes `\u{hex}` (`\t`, `\n`, `\r`, `\0` for the common ones) and
/// a backslash becomes `\\`, so the output is unambiguous. Borrows when
/// nothing needs escaping.
pub fn escape_for_terminal(value: &str) -> Cow<'_, str> {
    let Some(first) = value.find(needs_escape) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(value.len() + 8);
    out.push_str(&value[..first]);
    for c in value[first..].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_refuse_controls_and_bidi() {
        for ok in [
            "",
            "CI deploy (prod)",
            "café ☕ 日本語",
            "tab-free; quotes \" ' ok",
            "a\\b",
        ] {
            assert_eq!(check_label(ok, 256), Ok(()), "{ok:?}");
        }
        for bad in [
            "\u{1b}[31mred",
            "two\nlines",
            "nul\0",
            "cr\r",
            "tab\t",
            "del\u{7f}",
            "c1\u{85}",
            "c1\u{9b}31m",
        ] {
            assert_eq!(check_label(bad, 256), Err(TextProblem::Control), "{bad:?}");
        }
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            let text = format!("key{c}gpj.exe");
            assert_eq!(check_label(&text, 256), Err(TextProblem::Bidi), "{c:?}");
        }
        assert_eq!(check_label(&"é".repeat(256), 256), Ok(()));
        assert_eq!(
            check_label(&"é".repeat(257), 256),
            Err(TextProblem::TooLong)
        );
    }

    #[test]
    fn every_cc_character_is_refused() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            assert_eq!(
                check_label(&c.to_string(), 10),
                Err(TextProblem::Control),
                "{c:?}"
            );
        }
    }

    #[test]
    fn escaping_shows_what_is_there() {
        let cases = [
            ("plain name", "plain name"),
            ("日本語 café", "日本語 café"),
            ("\u{1b}[2J", "\\u{1b}[2J"),
            ("a\tb\nc\rd\0e", "a\\tb\\nc\\rd\\0e"),
            ("x\u{202e}gpj", "x\\u{202e}gpj"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("\u{feff}bom", "\\u{feff}bom"),
            ("c1\u{9b}", "c1\\u{9b}"),
            ("back\\slash", "back\\\\slash"),
            ("\\u{1b}", "\\\\u{1b}"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_for_terminal(input), want, "{input:?}");
        }
        assert!(matches!(escape_for_terminal("ok"), Cow::Borrowed(_)));
        // The escaped text itself has nothing left to escape but backslashes.
        let escaped = escape_for_terminal("\u{1b}\n\u{202e}");
        assert!(
            !escaped
                .chars()
                .any(|c| c.is_control() || is_bidi_control(c))
        );
    }
}
