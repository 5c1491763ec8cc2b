//! The vocabulary every layer shares: the one [`Protocol`], a flow end's
//! [`Identity`], [`Direction`], shared [`Name`]s, the clock, and
//! `string_enum!` for values with one spelling each.
//!
//! A leaf: it uses nothing else in the crate.

pub mod clock;
mod flow_id;
mod identity;
mod pod_ref;
mod protocol;

pub use flow_id::{Endpoint, FlowId};
pub use identity::{HOST, Identity, WORLD};
pub use pod_ref::PodRef;
pub use protocol::{Protocol, UnknownProtocol};

/// A shared name (`namespace/name`, a namespace, a pod name): verdicts
/// carry these by reference count instead of copying strings.
pub type Name = std::sync::Arc<str>;

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
            type Err = $crate::model::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::model::UnknownValue {
                        value: text.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::model::deserialize_parsed(deserializer)
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

/// Deserialises a value from its text through `FromStr`, keeping the
/// parse error's words (`impl Deserialize` bodies call it).
///
/// # Errors
/// The text's, or its parse error as a custom error.
pub fn deserialize_parsed<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

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
