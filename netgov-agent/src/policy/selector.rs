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
    /// use netgov_agent::policy::selector::{Labels, Selector};
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
        for (key, value) in selector.match_labels.iter().flatten() {
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
