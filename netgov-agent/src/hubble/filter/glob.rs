//! Hubble's name patterns (FQDNs, node names): `*` stands for any run of
//! name characters (`*.example.com`, `worker-*`), in any case, with or
//! without the final dot; anything but letters, digits, `-`, `_`, `.` and
//! `*` is refused.

use super::FilterError;

/// A case-insensitive pattern where `*` matches any run of characters.
#[derive(Clone, Debug)]
pub struct Glob {
    parts: Vec<String>,
}

impl Glob {
    /// A pattern of `field`.
    ///
    /// # Errors
    /// An empty pattern, or one with other characters.
    pub fn new(field: &'static str, pattern: &str) -> Result<Self, FilterError> {
        let canonical = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if canonical.is_empty() {
            return Err(FilterError::invalid(field, pattern, "must not be empty"));
        }
        if !canonical
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.*".contains(c))
        {
            return Err(FilterError::invalid(
                field,
                pattern,
                "only letters, digits, `-`, `_`, `.` and `*`",
            ));
        }
        let pattern = canonical;
        Ok(Self {
            parts: pattern.split('*').map(str::to_owned).collect(),
        })
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.trim_end_matches('.').to_ascii_lowercase();
        let (first, rest) = self.parts.split_first().expect("split yields a part");
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }
}
