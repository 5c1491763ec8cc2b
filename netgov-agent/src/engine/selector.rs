//! Kubernetes label selectors, compiled once into matchers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::PolicyError;
use super::label_set::LabelLookup;
use crate::model::Name;

/// `values` as names.
fn names(values: &[String]) -> Box<[Name]> {
    values.iter().map(|v| Name::from(v.as_str())).collect()
}

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector; all must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(Name, Name),
    In(Name, Box<[Name]>),
    NotIn(Name, Box<[Name]>),
    Exists(Name),
    DoesNotExist(Name),
}

impl Requirement {
    fn matches<L: LabelLookup + ?Sized>(&self, labels: &L) -> bool {
        let listed = |values: &[Name], value: &str| values.iter().any(|v| **v == *value);
        match self {
            Requirement::Equals(key, value) => labels.label(key) == Some(&**value),
            Requirement::In(key, values) => labels.label(key).is_some_and(|v| listed(values, v)),
            // Upstream: NotIn matches objects without the key, too.
            Requirement::NotIn(key, values) => labels.label(key).is_none_or(|v| !listed(values, v)),
            Requirement::Exists(key) => labels.label(key).is_some(),
            Requirement::DoesNotExist(key) => labels.label(key).is_none(),
        }
    }
}

/// A compiled label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether the selector matches everything.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Takes each of its strings from `share`, which returns one shared
    /// copy of each: ten thousand policies select by a few keys and values.
    pub fn share_strings(&mut self, share: &mut impl FnMut(&str) -> Name) {
        for requirement in &mut self.requirements {
            match requirement {
                Requirement::Equals(key, value) => {
                    *key = share(key);
                    *value = share(value);
                }
                Requirement::In(key, values) | Requirement::NotIn(key, values) => {
                    *key = share(key);
                    for value in values.iter_mut() {
                        *value = share(value);
                    }
                }
                Requirement::Exists(key) | Requirement::DoesNotExist(key) => *key = share(key),
            }
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches<L: LabelLookup + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Compiles `selector`, found at `field` of `object`.
    ///
    /// # Errors
    /// [`PolicyError::Invalid`] for an unknown operator, `In`/`NotIn`
    /// without values, or `Exists`/`DoesNotExist` with values — as the API
    /// server's validation rejects them.
    ///
    /// # Examples
    /// ```
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    /// use netgov_agent::engine::selector::{Labels, Selector};
    /// let selector: LabelSelector =
    ///     serde_json::from_str(r#"{"matchLabels": {"app": "db"}}"#).unwrap();
    /// let selector = Selector::compile(&selector, "ns/p", "spec.podSelector").unwrap();
    /// let labels: Labels = [("app".to_string(), "db".to_string())].into();
    /// assert!(selector.matches(&labels));
    /// ```
    pub fn compile(
        selector: &LabelSelector,
        object: &str,
        field: &str,
    ) -> Result<Self, PolicyError> {
        let mut requirements = Vec::new();
        let invalid_label = |field: String, reason: String| PolicyError::Invalid {
            object: object.to_owned(),
            field,
            reason,
        };
        for (key, value) in selector.match_labels.iter().flatten() {
            let field = format!("{field}.matchLabels");
            if !is_label_key(key) {
                return Err(invalid_label(
                    field,
                    format!("`{key}` is not a valid label key"),
                ));
            }
            if !is_label_value(value) {
                return Err(invalid_label(
                    format!("{field}.{key}"),
                    format!("`{value}` is not a valid label value"),
                ));
            }
            requirements.push(Requirement::Equals(
                Name::from(&**key),
                Name::from(&**value),
            ));
        }
        for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let field = format!("{field}.matchExpressions[{i}]");
            let values = expression.values.clone().unwrap_or_default();
            let invalid = |reason: String| PolicyError::Invalid {
                object: object.to_owned(),
                field: field.clone(),
                reason,
            };
            let key = expression.key.clone();
            if !is_label_key(&key) {
                return Err(invalid(format!("`{key}` is not a valid label key")));
            }
            if let Some(value) = values.iter().find(|v| !is_label_value(v)) {
                return Err(invalid(format!("`{value}` is not a valid label value")));
            }
            let requirement = match expression.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(invalid(format!(
                        "operator {} needs values",
                        expression.operator
                    )));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(invalid(format!(
                        "operator {} takes no values",
                        expression.operator
                    )));
                }
                "In" => Requirement::In(key.into(), names(&values)),
                "NotIn" => Requirement::NotIn(key.into(), names(&values)),
                "Exists" => Requirement::Exists(key.into()),
                "DoesNotExist" => Requirement::DoesNotExist(key.into()),
                other => {
                    return Err(invalid(format!(
                        "unknown operator `{other}` (In, NotIn, Exists, DoesNotExist)"
                    )));
                }
            };
            requirements.push(requirement);
        }
        Ok(Self {
            requirements: super::compile::exact(requirements),
        })
    }
}

/// A label name part: 1-63 characters, alphanumeric at both ends, `-`, `_`
/// and `.` inside (the API server's qualified-name rule).
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        None => is_label_name(key),
        Some((prefix, name)) => {
            let labels_ok = prefix.split('.').all(|label| {
                let bytes = label.as_bytes();
                !bytes.is_empty()
                    && bytes.len() <= 63
                    && bytes[0].is_ascii_alphanumeric()
                    && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            });
            prefix.len() <= 253 && labels_ok && is_label_name(name)
        }
    }
}

/// A label value: empty, or a label name.
fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}
