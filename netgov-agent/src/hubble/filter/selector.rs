//! Kubernetes label selector syntax (`app=a,tier in (web,api),!canary`)
//! over Cilium's `source:key=value` labels, as Hubble reads it: a key with
//! a source (`k8s:app`) matches labels of that source only; a key without
//! one matches any source.

use super::FilterError;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Operator {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    /// `None`: any source.
    source: Option<String>,
    key: String,
    operator: Operator,
}

/// A parsed selector: every requirement must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

/// A label in Cilium's form, split.
struct Label<'a> {
    source: &'a str,
    key: &'a str,
    value: &'a str,
}

fn split_label(label: &str) -> Label<'_> {
    let (source, rest) = label.split_once(':').unwrap_or(("", label));
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    Label { source, key, value }
}

impl Selector {
    /// Parses `text`, naming `field` in its error.
    ///
    /// # Errors
    /// [`FilterError::Invalid`] for what is not selector syntax.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, FilterError> {
        let invalid = |why: &'static str| FilterError::invalid(field, text, why);
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                return Err(invalid("empty requirement"));
            }
            let (negated, part) = match part.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, part),
            };
            let key_end = part
                .find(|c: char| c.is_whitespace() || "=!()<>".contains(c))
                .unwrap_or(part.len());
            let (key, rest) = part.split_at(key_end);
            if key.is_empty() {
                return Err(invalid("a requirement without a key"));
            }
            let rest = rest.trim();
            let operator = if negated {
                if !rest.is_empty() {
                    return Err(invalid("`!key` takes no value"));
                }
                Operator::NotExists
            } else if rest.is_empty() {
                Operator::Exists
            } else if let Some(value) = rest.strip_prefix("!=") {
                Operator::NotEquals(value.trim().to_owned())
            } else if let Some(value) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
                Operator::Equals(value.trim().to_owned())
            } else if let Some(set) = rest.strip_prefix("notin") {
                Operator::NotIn(parse_set(set).ok_or_else(|| invalid("expected `notin (v1,v2)`"))?)
            } else if let Some(set) = rest.strip_prefix("in") {
                Operator::In(parse_set(set).ok_or_else(|| invalid("expected `in (v1,v2)`"))?)
            } else {
                return Err(invalid("expected =, ==, !=, in or notin"));
            };
            let (source, key) = match key.split_once(':') {
                Some((source, key)) if source != "any" => (Some(source.to_owned()), key),
                Some((_, key)) => (None, key),
                None => (None, key),
            };
            requirements.push(Requirement {
                source,
                key: key.to_owned(),
                operator,
            });
        }
        Ok(Self(requirements))
    }

    /// Whether `labels` (Cilium's form) satisfy every requirement.
    pub fn matches(&self, labels: &[String]) -> bool {
        self.0.iter().all(|r| {
            let mut values = labels
                .iter()
                .map(|l| split_label(l))
                .filter(|l| l.key == r.key && r.source.as_deref().is_none_or(|s| s == l.source));
            match &r.operator {
                Operator::Exists => values.next().is_some(),
                Operator::NotExists => values.next().is_none(),
                Operator::Equals(v) => values.any(|l| l.value == v),
                Operator::NotEquals(v) => values.all(|l| l.value != v),
                Operator::In(set) => values.any(|l| set.iter().any(|v| v == l.value)),
                Operator::NotIn(set) => values.all(|l| !set.iter().any(|v| v == l.value)),
            }
        })
    }
}

/// `(a, b)` → `[a, b]`.
fn parse_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    values.iter().all(|v| !v.is_empty()).then_some(values)
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let labels: Vec<String> = ["k8s:app=a", "k8s:tier=web", "reserved:host"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows: [(&str, Result<bool, ()>); 16] = [
            ("app=a", Ok(true)),
            ("k8s:app=a", Ok(true)),
            ("any:app=a", Ok(true)),
            ("reserved:app=a", Ok(false)),
            ("app==a,tier=web", Ok(true)),
            ("app=a, tier=db", Ok(false)),
            ("app!=b", Ok(true)),
            ("missing!=b", Ok(true)),
            ("tier in (db, web)", Ok(true)),
            ("tier notin (db,web)", Ok(false)),
            ("app", Ok(true)),
            ("!canary", Ok(true)),
            ("reserved:host", Ok(true)),
            ("app in db", Err(())),
            ("=a", Err(())),
            ("app>1", Err(())),
        ];
        for (text, expected) in rows {
            let got = Selector::parse("source_label", text).map(|s| s.matches(&labels));
            assert_eq!(got.map_err(drop), expected, "{text}");
        }
    }
}
