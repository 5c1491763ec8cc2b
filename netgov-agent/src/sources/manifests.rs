//! Kubernetes objects from YAML or JSON files: multi-document YAML, and
//! `kind: List` (what `kubectl get -o yaml` prints) both work.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::engine::{ClusterState, Object, ObjectError, PolicyError, ResourceKind};

/// Where an object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// `Kind namespace/name` (or `Kind name`).
    pub object: String,
}

/// Errors reading manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A path cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML or JSON.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with its line and column).
        reason: String,
    },
    /// An object does not match its kind's schema.
    #[error("{path}: {object}: {field}: {reason}")]
    Object {
        /// The file.
        path: PathBuf,
        /// `Kind namespace/name`.
        object: String,
        /// Path of the offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A path could not be walked or a file is too large.
    #[error(transparent)]
    Walk(#[from] crate::input::WalkError),
    /// A file nests deeper than [`crate::input::MAX_NESTING`].
    #[error(
        "{path}:{line}: nested more than {} levels deep; not parsed",
        crate::input::MAX_NESTING
    )]
    TooDeep {
        /// The file.
        path: PathBuf,
        /// The line where the limit is passed.
        line: usize,
    },
    /// A policy is invalid (see [`PolicyError`]).
    #[error("{path}: {error}")]
    Policy {
        /// The file.
        path: PathBuf,
        /// The compile error.
        error: PolicyError,
    },
}

/// Objects read from files, with what was skipped.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Supported objects with their origin.
    pub objects: Vec<(Object, Origin)>,
    /// Kinds present but not used by the engine (Deployments, ...), with
    /// their count.
    pub skipped_kinds: std::collections::BTreeMap<String, usize>,
}

/// Reads every `.yaml`, `.yml` and `.json` file under `paths` (files or
/// directories, recursively, in name order; see
/// [`crate::input::manifest_files`]).
///
/// # Errors
/// Every problem found, each naming file, object and field; objects of the
/// files without problems are still returned in `Ok` only if there is no
/// error at all.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, Vec<ManifestError>> {
    let (files, walk_errors) = crate::input::manifest_files(paths);
    let mut errors: Vec<ManifestError> = walk_errors.into_iter().map(ManifestError::from).collect();
    let mut manifests = Manifests::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parse_file(&file, &text, &mut manifests, &mut errors),
            Err(source) => errors.push(ManifestError::Read { path: file, source }),
        }
    }
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// Parses one file's text (YAML is a superset of JSON, but JSON files go
/// through the JSON parser for its error messages).
pub fn parse_file(
    file: &Path,
    text: &str,
    manifests: &mut Manifests,
    errors: &mut Vec<ManifestError>,
) {
    let syntax = |reason: String| ManifestError::Syntax {
        path: file.to_owned(),
        reason,
    };
    if let Some(line) = crate::input::too_deep(text) {
        return errors.push(ManifestError::TooDeep {
            path: file.to_owned(),
            line,
        });
    }
    let is_json = file.extension().is_some_and(|e| e == "json");
    let documents: Vec<Value> = if is_json {
        match serde_json::from_str(text) {
            Ok(value) => vec![value],
            Err(e) => return errors.push(syntax(e.to_string())),
        }
    } else {
        let mut documents = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            match Value::deserialize(document) {
                Ok(Value::Null) => {} // an empty document (`---` at the end)
                Ok(value) => documents.push(value),
                Err(e) => return errors.push(syntax(e.to_string())),
            }
        }
        documents
    };
    for document in documents {
        add_value(file, document, manifests, errors);
    }
}

fn describe(value: &Value) -> String {
    let kind = value["kind"].as_str().unwrap_or("object without kind");
    let name = value["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    match value["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn add_value(
    file: &Path,
    value: Value,
    manifests: &mut Manifests,
    errors: &mut Vec<ManifestError>,
) {
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    if kind.ends_with("List") && value["items"].is_array() {
        if let Value::Object(mut map) = value
            && let Some(Value::Array(items)) = map.remove("items")
        {
            for item in items {
                add_value(file, item, manifests, errors);
            }
        }
        return;
    }
    let object = describe(&value);
    let origin = Origin {
        file: file.to_owned(),
        object: object.clone(),
    };
    let kind = match ResourceKind::from_name(&kind) {
        Some(kind) => kind,
        None if kind.is_empty() => {
            return errors.push(ManifestError::Object {
                path: file.to_owned(),
                object,
                field: "kind".into(),
                reason: "missing".into(),
            });
        }
        None => {
            *manifests.skipped_kinds.entry(kind).or_default() += 1;
            return;
        }
    };
    let parsed = match Object::decode(kind, value) {
        Ok(parsed) => parsed,
        Err(ObjectError::Schema { field, reason }) => {
            return errors.push(ManifestError::Object {
                path: file.to_owned(),
                object,
                field,
                reason,
            });
        }
        Err(ObjectError::Policy(error)) => {
            return errors.push(ManifestError::Policy {
                path: file.to_owned(),
                error,
            });
        }
    };
    manifests.objects.push((parsed, origin));
}

impl Manifests {
    /// Builds a cluster state from the objects (namespaces, nodes and
    /// policies before pods, so each pod is indexed once).
    ///
    /// # Errors
    /// Every invalid policy, naming its file; the state holds every valid
    /// object either way.
    pub fn into_cluster(mut self) -> (ClusterState, Vec<ManifestError>) {
        self.objects.sort_by_key(|(object, _)| object.rank());
        let mut cluster = ClusterState::new();
        let mut errors = Vec::new();
        for (object, origin) in &self.objects {
            if let Err(error) = cluster.apply(object) {
                errors.push(ManifestError::Policy {
                    path: origin.file.clone(),
                    error,
                });
            }
        }
        (cluster, errors)
    }
}

#[cfg(test)]
impl ClusterState {
    /// The cluster state of YAML manifests, for tests; panics on any error.
    pub(crate) fn from_yaml(yaml: &str) -> Self {
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        parse_file(Path::new("test.yaml"), yaml, &mut manifests, &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
        let (cluster, errors) = manifests.into_cluster();
        assert!(errors.is_empty(), "{errors:#?}");
        cluster
    }
}
