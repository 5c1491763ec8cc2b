//! Objects from the API server, converted to their kind's type and applied
//! to the [`ClusterState`] one at a time, so a malformed object is skipped
//! with an error naming it and its field, and the rest still applies.

use std::sync::RwLock;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ResourceKind;
use crate::engine::ClusterState;
use crate::engine::PolicyError;
use crate::engine::tiers::ClusterPolicyKind;

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

/// Why an object from the API is skipped.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// It does not fit its kind's schema.
    #[error("{field}: {reason}")]
    Schema {
        /// Path of the field that does not fit (`.` for the whole object).
        field: String,
        /// The decoder's message.
        reason: String,
    },
    /// It is an invalid NetworkPolicy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Converts an untyped object, naming the field that does not fit.
fn typed<K: DeserializeOwned>(value: Value) -> Result<K, ObjectError> {
    serde_path_to_error::deserialize(value).map_err(|e| ObjectError::Schema {
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

/// An object converted to its kind's type, ready to apply.
// One lives at a time, on the stack, between decoding and applying:
// boxing the large variants would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Typed {
    Namespace(Namespace),
    Node(Node),
    NetworkPolicy(NetworkPolicy),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    ClusterPolicy(ClusterPolicyKind, Box<serde_json::Value>),
}

fn convert(kind: ResourceKind, object: Value) -> Result<Typed, ObjectError> {
    Ok(match kind {
        ResourceKind::Namespace => Typed::Namespace(typed(object)?),
        ResourceKind::Node => Typed::Node(typed(object)?),
        ResourceKind::NetworkPolicy => Typed::NetworkPolicy(typed(object)?),
        ResourceKind::Pod => Typed::Pod(typed(object)?),
        ResourceKind::Service => Typed::Service(typed(object)?),
        ResourceKind::EndpointSlice => Typed::EndpointSlice(typed(object)?),
        ResourceKind::ClusterNetworkPolicy
        | ResourceKind::AdminNetworkPolicy
        | ResourceKind::BaselineAdminNetworkPolicy => {
            let policy_kind = kind.cluster_policy().expect("a cluster policy kind");
            Typed::ClusterPolicy(policy_kind, Box::new(object))
        }
    })
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
    let object = convert(kind, object)?;
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    match object {
        Typed::Namespace(o) => state.upsert_namespace(&o),
        Typed::Node(o) => state.upsert_node(&o),
        Typed::NetworkPolicy(o) => state.upsert_policy(&o)?,
        Typed::Pod(o) => state.upsert_pod(&o),
        Typed::Service(o) => state.upsert_service(&o),
        Typed::EndpointSlice(o) => state.upsert_endpoint_slice(&o),
        Typed::ClusterPolicy(kind, o) => {
            state.upsert_cluster_policy(kind, &o)?;
            for warning in state.cluster_policy_warnings() {
                tracing::warn!(%warning, "cluster-wide policy");
            }
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
    match kind {
        ResourceKind::Namespace => state.delete_namespace(name),
        ResourceKind::Node => state.delete_node(name),
        ResourceKind::NetworkPolicy => state.delete_policy(namespace, name),
        ResourceKind::Pod => state.delete_pod(namespace, name),
        ResourceKind::Service => state.delete_service(namespace, name),
        ResourceKind::EndpointSlice => state.delete_endpoint_slice(namespace, name),
        ResourceKind::ClusterNetworkPolicy
        | ResourceKind::AdminNetworkPolicy
        | ResourceKind::BaselineAdminNetworkPolicy => {
            if let Some(policy_kind) = kind.cluster_policy() {
                state.delete_cluster_policy(policy_kind, name);
            }
        }
    }
}
