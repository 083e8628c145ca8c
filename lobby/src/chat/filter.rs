//! The word filter: configured words are masked with `*` wherever they appear
//! as whole words, case-insensitively, before a message is stored.

use std::borrow::Cow;
use std::collections::HashSet;

/// A set of words to mask. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordFilter {
    words: HashSet<String>,
}

impl WordFilter {
    /// A filter masking `words` (compared lowercase; blank entries are ignored).
    pub fn new<I, S>(words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words =
            words.into_iter().map(|word| word.as_ref().trim().to_lowercase()).filter(|word| !word.is_empty()).collect();
        Self { words }
    }

    /// Parses a word list: one word a line; blank lines and `#` comments are skipped.
    pub fn from_list(text: &str) -> Self {
        Self::new(text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')))
    }

    /// How many words it masks.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when it masks nothing.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// `text` with every filtered word (a maximal run of letters and digits)
    /// replaced by as many `*` as it has characters.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.words.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut masked: Option<String> = None;
        let mut copied_to = 0;
        let mut word_start: Option<usize> = None;
        // A sentinel boundary at the end closes the last word.
        for (idx, ch) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
            if ch.is_alphanumeric() {
                word_start.get_or_insert(idx);
                continue;
            }
            let Some(start) = word_start.take() else { continue };
            let word = &text[start..idx];
            if self.words.contains(&word.to_lowercase()) {
                let out = masked.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied_to..start]);
                out.extend(std::iter::repeat_n('*', word.chars().count()));
                copied_to = idx;
            }
        }
        match masked {
            None => Cow::Borrowed(text),
            Some(mut out) => {
                out.push_str(&text[copied_to..]);
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_whole_words_case_insensitively() {
        let filter = WordFilter::from_list("# words\nheck\n\nDarn\n");
        assert_eq!(filter.len(), 2);
        assert_eq!(filter.mask("Heck, that darn paddle!"), "****, that **** paddle!");
        assert_eq!(filter.mask("heck"), "****");
        // Only whole words: a longer word containing one is left alone.
        assert_eq!(filter.mask("checkmate heckler"), "checkmate heckler");
        assert!(matches!(filter.mask("nothing to see"), Cow::Borrowed(_)));
        assert_eq!(filter.mask("ünïcödé heck ünïcödé"), "ünïcödé **** ünïcödé");
    }

    #[test]
    fn an_empty_filter_changes_nothing() {
        let filter = WordFilter::default();
        assert!(filter.is_empty());
        assert_eq!(filter.mask("heck"), "heck");
    }
}
