//! The neutral state layer: what the cluster is ([`ClusterState`]), who an
//! address is ([`Resolved`], [`Identity`]), a pod's workload, and the
//! vocabulary every stage shares ([`Protocol`], label-valued enums).
//!
//! Layering (each arrow "uses"): `cluster` (sources) → `state` →
//! `policy::compile`; `policy::evaluate` → `state`; `agent` → all of them.
//! Nothing here does I/O or knows where objects come from, so the policy
//! engine and this layer can move to their own crate without the sources.

pub mod cluster;
mod cluster_policies;
mod history;
mod identity;
mod pods;
mod protocol;
pub mod services;
pub mod workload;

pub use cluster::{ClusterState, NamedPort, PodInfo, Resolved};
pub use history::DEFAULT_HISTORY_RETENTION;
pub use identity::{HOST, Identity, WORLD};
pub use protocol::Protocol;
pub use services::{
    EndpointInfo, Frontend, NoBackend, SERVICE_NAME_LABEL, ServiceInfo, ServicePortInfo, SliceInfo,
};

/// Declares a fieldless enum whose variants each have one string: the
/// same text in `Display`, JSON (serde) and Prometheus label values, so no
/// caller ever spells a label value itself.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value.
            #[allow(dead_code)]
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The value's one spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::state::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::state::UnknownValue {
                        value: text.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl ::prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder,
            ) -> Result<(), ::std::fmt::Error> {
                ::std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

/// A text that is none of an enum's spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of {}", .expected.join(", "))]
pub struct UnknownValue {
    /// The text given.
    pub value: String,
    /// The spellings accepted.
    pub expected: &'static [&'static str],
}

string_enum! {
    /// A direction of policy: a pod's ingress or its egress.
    pub enum Direction {
        /// Traffic into the pod.
        Ingress => "ingress",
        /// Traffic out of the pod.
        Egress => "egress",
    }
}
