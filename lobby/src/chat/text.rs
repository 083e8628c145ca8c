//! The rules for chat's free text (a message body, a mute or report reason),
//! as `chat.proto` states them: a length in characters (Unicode scalar
//! values), newline and tab as the only control characters, no bidirectional
//! overrides or isolates, and, where text is required, at least one visible
//! character.

use crate::error::LobbyError;

/// The bidirectional embeddings, overrides (U+202A–U+202E) and isolates
/// (U+2066–U+2069): they make text display differently from what it says.
fn is_bidi_control(ch: char) -> bool {
    matches!(ch, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that draw nothing: zero-width spaces and joiners, word joiners
/// and invisible operators, the byte-order mark, variation selectors, fillers
/// and the like. Allowed inside visible text (an emoji's joiner), but they do
/// not make a text non-empty.
fn is_invisible(ch: char) -> bool {
    ch.is_whitespace()
        || matches!(
            ch,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
        )
}

/// Checks free text: at most `max_chars` characters; no control characters
/// but newline and tab (PostgreSQL refuses NUL in text); no bidirectional
/// controls; and when `required`, at least one visible character.
pub(super) fn check_text(field: &'static str, text: &str, max_chars: usize, required: bool) -> Result<(), LobbyError> {
    if required && text.chars().all(is_invisible) {
        let reason = if text.is_empty() {
            "is empty; write at least one visible character".to_owned()
        } else {
            "is empty: it has no visible character, only whitespace or zero-width ones".to_owned()
        };
        return Err(LobbyError::invalid(field, reason));
    }
    let n_chars = text.chars().count();
    if n_chars > max_chars {
        return Err(LobbyError::invalid(field, format!("is {n_chars} characters; the limit is {max_chars}")));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(LobbyError::invalid(
            field,
            format!("contains the control character {bad:?}; only newline and tab are allowed"),
        ));
    }
    if let Some(bad) = text.chars().find(|c| is_bidi_control(*c)) {
        return Err(LobbyError::invalid(
            field,
            format!(
                "contains the bidirectional control U+{:04X}; U+202A–U+202E and U+2066–U+2069 are not allowed",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(result: Result<(), LobbyError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn the_rules_of_chat_proto() {
        assert!(check_text("body", "hello\n\tthere", 20, true).is_ok());
        assert!(check_text("body", "a\u{200D}b", 20, true).is_ok());
        assert!(check_text("reason", "", 20, false).is_ok());
        assert!(refusal(check_text("body", "", 20, true)).contains("is empty"));
        assert!(refusal(check_text("body", "  \n", 20, true)).contains("no visible character"));
        assert!(refusal(check_text("body", "\u{200B}\u{FEFF}\u{3164}", 20, true)).contains("no visible character"));
        assert!(refusal(check_text("body", "ééé", 2, true)).contains("is 3 characters; the limit is 2"));
        assert!(refusal(check_text("reason", "a\0b", 20, true)).contains("control character"));
        assert!(refusal(check_text("body", "a\u{85}b", 20, true)).contains("control character"));
        for bidi in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
            let text = format!("abc{bidi}def");
            assert!(refusal(check_text("body", &text, 20, true)).contains("bidirectional control U+"), "{bidi:?}");
        }
        assert!(check_text("body", "abc\u{2065}def", 20, true).is_ok(), "U+2065 is unassigned, not a control");
    }
}
