//! Kubernetes label selectors, compiled once into matchers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::PolicyError;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector; all must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            // Upstream: NotIn matches objects without the key, too.
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
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

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
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
            requirements.push(Requirement::Equals(key.clone(), value.clone()));
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
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(invalid(format!(
                        "unknown operator `{other}` (In, NotIn, Exists, DoesNotExist)"
                    )));
                }
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
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
