//! The objects the engine is made of, as both sources hand them over: the
//! Kubernetes API (`sources::kube_source`) and manifest files
//! (`sources::manifests`).

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::PolicyError;
use super::tiers::ClusterPolicyKind;

/// The resources the cluster state is made of (the agent's ClusterRole
/// grants `get`, `list`, `watch` on exactly these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// core/v1 Namespaces.
    Namespace,
    /// core/v1 Nodes.
    Node,
    /// networking.k8s.io/v1 NetworkPolicies.
    NetworkPolicy,
    /// core/v1 Pods.
    Pod,
    /// core/v1 Services.
    Service,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlice,
    /// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicies (a CRD:
    /// may be absent).
    ClusterNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicies (a CRD).
    AdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 BaselineAdminNetworkPolicies (a
    /// CRD).
    BaselineAdminNetworkPolicy,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 9] = [
        ResourceKind::Namespace,
        ResourceKind::Node,
        ResourceKind::NetworkPolicy,
        ResourceKind::Pod,
        ResourceKind::Service,
        ResourceKind::EndpointSlice,
        ResourceKind::ClusterNetworkPolicy,
        ResourceKind::AdminNetworkPolicy,
        ResourceKind::BaselineAdminNetworkPolicy,
    ];

    /// The cluster-wide policy kind this resource holds, if it is one.
    pub fn cluster_policy(self) -> Option<ClusterPolicyKind> {
        match self {
            ResourceKind::ClusterNetworkPolicy => Some(ClusterPolicyKind::ClusterNetworkPolicy),
            ResourceKind::AdminNetworkPolicy => Some(ClusterPolicyKind::AdminNetworkPolicy),
            ResourceKind::BaselineAdminNetworkPolicy => {
                Some(ClusterPolicyKind::BaselineAdminNetworkPolicy)
            }
            _ => None,
        }
    }

    /// The kind called `name` in manifests (`kind:`), if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The API version watched (for the CRDs; the built-in kinds take
    /// theirs from their types).
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::ClusterNetworkPolicy => "v1alpha2",
            ResourceKind::AdminNetworkPolicy | ResourceKind::BaselineAdminNetworkPolicy => {
                "v1alpha1"
            }
            _ => "v1",
        }
    }

    /// The kind's name, as in manifests and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Node => "Node",
            ResourceKind::NetworkPolicy => "NetworkPolicy",
            ResourceKind::Pod => "Pod",
            ResourceKind::Service => "Service",
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            ResourceKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            ResourceKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }

    /// The kind's API group (`""` for core) and resource name, as RBAC
    /// rules name them; taken from the types the watchers use.
    pub fn api_resource(self) -> (&'static str, &'static str) {
        use k8s_openapi::Resource;
        use k8s_openapi::api::{core, discovery, networking};
        fn of<K: Resource>() -> (&'static str, &'static str) {
            (K::GROUP, K::URL_PATH_SEGMENT)
        }
        match self {
            ResourceKind::Namespace => of::<core::v1::Namespace>(),
            ResourceKind::Node => of::<core::v1::Node>(),
            ResourceKind::NetworkPolicy => of::<networking::v1::NetworkPolicy>(),
            ResourceKind::Pod => of::<core::v1::Pod>(),
            ResourceKind::Service => of::<core::v1::Service>(),
            ResourceKind::EndpointSlice => of::<discovery::v1::EndpointSlice>(),
            ResourceKind::ClusterNetworkPolicy => {
                ("policy.networking.k8s.io", "clusternetworkpolicies")
            }
            ResourceKind::AdminNetworkPolicy => {
                ("policy.networking.k8s.io", "adminnetworkpolicies")
            }
            ResourceKind::BaselineAdminNetworkPolicy => {
                ("policy.networking.k8s.io", "baselineadminnetworkpolicies")
            }
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for ResourceKind {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// A supported object.
#[derive(Clone, Debug)]
pub enum Object {
    /// A Namespace.
    Namespace(Box<Namespace>),
    /// A Node.
    Node(Box<Node>),
    /// A NetworkPolicy.
    NetworkPolicy(Box<NetworkPolicy>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A cluster-wide policy (ClusterNetworkPolicy, AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy), compiled from its JSON value.
    ClusterPolicy(ClusterPolicyKind, Box<Value>),
}

impl Object {
    /// Load order: what others refer to first.
    pub fn rank(&self) -> u8 {
        match self {
            Object::Namespace(_) => 0,
            Object::Node(_) => 1,
            Object::NetworkPolicy(_) | Object::ClusterPolicy(..) => 2,
            Object::Pod(_) => 3,
            Object::Service(_) => 4,
            Object::EndpointSlice(_) => 5,
        }
    }
}

impl Object {
    /// Converts an untyped object of `kind`, naming the field that does not
    /// fit its schema.
    ///
    /// # Errors
    /// [`ObjectError::Schema`].
    pub fn decode(kind: ResourceKind, object: Value) -> Result<Self, ObjectError> {
        Ok(match kind {
            ResourceKind::Namespace => Object::Namespace(typed(object)?),
            ResourceKind::Node => Object::Node(typed(object)?),
            ResourceKind::NetworkPolicy => Object::NetworkPolicy(typed(object)?),
            ResourceKind::Pod => Object::Pod(typed(object)?),
            ResourceKind::Service => Object::Service(typed(object)?),
            ResourceKind::EndpointSlice => Object::EndpointSlice(typed(object)?),
            ResourceKind::ClusterNetworkPolicy
            | ResourceKind::AdminNetworkPolicy
            | ResourceKind::BaselineAdminNetworkPolicy => {
                let policy_kind = kind.cluster_policy().expect("a cluster policy kind");
                Object::ClusterPolicy(policy_kind, Box::new(object))
            }
        })
    }

    /// The object's kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Object::Namespace(_) => ResourceKind::Namespace,
            Object::Node(_) => ResourceKind::Node,
            Object::NetworkPolicy(_) => ResourceKind::NetworkPolicy,
            Object::Pod(_) => ResourceKind::Pod,
            Object::Service(_) => ResourceKind::Service,
            Object::EndpointSlice(_) => ResourceKind::EndpointSlice,
            // The inverse of `ResourceKind::cluster_policy`, which every
            // cluster policy kind has.
            Object::ClusterPolicy(kind, _) => ResourceKind::ALL
                .into_iter()
                .find(|resource| resource.cluster_policy() == Some(*kind))
                .expect("a resource for every cluster policy kind"),
        }
    }
}

macro_rules! object_from {
    ($($variant:ident),+) => {
        $(impl From<$variant> for Object {
            fn from(object: $variant) -> Self {
                Object::$variant(Box::new(object))
            }
        })+
    };
}
object_from!(Namespace, Node, NetworkPolicy, Pod, Service, EndpointSlice);

/// Why an object cannot be applied.
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
fn typed<K: DeserializeOwned>(value: Value) -> Result<Box<K>, ObjectError> {
    serde_path_to_error::deserialize(value)
        .map(Box::new)
        .map_err(|e| ObjectError::Schema {
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })
}
