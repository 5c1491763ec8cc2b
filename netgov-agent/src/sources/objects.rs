//! Objects from the API server, converted to their kind's type and applied
//! to the [`ClusterState`] one at a time, so a malformed object is skipped
//! with an error naming it and its field, and the rest still applies.

use std::sync::RwLock;

use serde_json::Value;

use crate::engine::{ClusterState, Object, ObjectError, ResourceKind};

/// An object's namespace (empty when cluster-scoped) and name.
pub(super) type ObjectKey = (String, String);

/// The key of an object as the API server sends it.
pub(super) fn object_key(object: &Value) -> ObjectKey {
    let field = |name: &str| {
        object["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

/// Converts the object first, then takes the write lock only to apply it:
/// judging never waits on JSON decoding.
pub(super) fn apply(
    kind: ResourceKind,
    state: &RwLock<ClusterState>,
    mut object: Value,
) -> Result<(), ObjectError> {
    // Written by every client that touches the object, often its largest
    // part, and never read.
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    let object = Object::decode(kind, object)?;
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    state.apply(&object)?;
    if let Object::ClusterPolicy(..) = object {
        for warning in state.cluster_policy_warnings() {
            tracing::warn!(%warning, "cluster-wide policy");
        }
    }
    Ok(())
}

pub(super) fn delete(
    kind: ResourceKind,
    state: &RwLock<ClusterState>,
    (namespace, name): &ObjectKey,
) {
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    state.delete(kind, namespace, name);
}
