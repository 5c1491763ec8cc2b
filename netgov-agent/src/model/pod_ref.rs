//! A pod named by its namespace and name.

use std::fmt;

use super::Name;

/// A pod by namespace and name, written `namespace/name`. It holds the two
/// shared names rather than one string joining them: every agent names
/// every pod of the cluster, and a joined copy each would be paid for
/// every pod again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// Namespace.
    pub namespace: Name,
    /// Name.
    pub name: Name,
}

impl PodRef {
    /// Whether this is the pod written `id` (`namespace/name`).
    pub fn is(&self, id: &str) -> bool {
        id.split_once('/') == Some((&*self.namespace, &*self.name))
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl serde::Serialize for PodRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_compared_as_namespace_slash_name() {
        let pod = PodRef {
            namespace: Name::from("ml"),
            name: Name::from("train-0"),
        };
        assert_eq!(pod.to_string(), "ml/train-0");
        assert_eq!(serde_json::to_string(&pod).expect("json"), "\"ml/train-0\"");
        assert!(pod.is("ml/train-0"));
        assert!(!pod.is("ml/train-1") && !pod.is("ml") && !pod.is("m/l/train-0"));
    }
}
