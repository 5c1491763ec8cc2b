//! Hubble's `FlowFilter`, evaluated on the flows netgov sends.
//!
//! A request's filters work as in Hubble: a flow is sent when it matches
//! any whitelist filter (or there is none) and no blacklist filter. Within
//! one filter every field given must match; within a field, any of its
//! values. Source and destination fields are symmetric.
//!
//! One small filter per file, each a [`Build`] function that turns the
//! fields it knows into [`Check`]s, with its table test. A field netgov
//! cannot honour (HTTP, DNS queries, cluster names, CEL, ...) is refused by
//! name ([`unsupported`]), never ignored: ignoring it would send flows the
//! client asked not to see.

mod direction;
mod event_type;
mod fqdn;
mod glob;
mod identity;
mod ip;
mod ip_version;
mod label;
mod name;
mod node;
mod port;
mod protocol;
mod selector;
mod tcp_flags;
mod unsupported;
mod uuid;
mod verdict;
mod workload;

use super::proto::flow::{Endpoint, Flow, FlowFilter};

/// One condition on a flow.
pub type Check = Box<dyn Fn(&Flow) -> bool + Send + Sync>;

/// Turns the fields of one filter that a file knows into checks.
type Build = fn(&FlowFilter) -> Result<Vec<Check>, FilterError>;

/// Every filter, in the order their checks run (cheap ones first).
const BUILDERS: &[Build] = &[
    uuid::build,
    verdict::build,
    event_type::build,
    direction::build,
    protocol::build,
    port::build,
    ip_version::build,
    tcp_flags::build,
    ip::build,
    identity::build,
    name::build,
    workload::build,
    node::build,
    fqdn::build,
    label::build,
];

/// A filter the server cannot evaluate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A field netgov does not honour was set.
    #[error("filter field {field} is not supported by netgov: {why}")]
    Unsupported {
        /// The field, as the proto names it.
        field: &'static str,
        /// Why netgov cannot honour it.
        why: &'static str,
    },
    /// A value does not parse.
    #[error("filter field {field}: invalid value {value:?}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl FilterError {
    fn invalid(field: &'static str, value: impl Into<String>, why: &'static str) -> Self {
        Self::Invalid {
            field,
            value: value.into(),
            why,
        }
    }
}

/// A filter list that names where its error is (`whitelist[1]`).
#[derive(Debug, thiserror::Error)]
#[error("{list}[{index}]: {error}")]
pub struct FilterListError {
    /// `whitelist` or `blacklist`.
    pub list: &'static str,
    /// Which filter.
    pub index: usize,
    /// What is wrong with it.
    #[source]
    pub error: FilterError,
}

/// One compiled `FlowFilter`: every check must pass.
struct Compiled(Vec<Check>);

impl Compiled {
    fn new(filter: &FlowFilter) -> Result<Self, FilterError> {
        unsupported::refuse(filter)?;
        let mut checks = Vec::new();
        for build in BUILDERS {
            checks.extend(build(filter)?);
        }
        Ok(Self(checks))
    }

    fn matches(&self, flow: &Flow) -> bool {
        self.0.iter().all(|check| check(flow))
    }
}

/// A request's whitelist and blacklist.
#[derive(Default)]
pub struct FlowFilters {
    whitelist: Vec<Compiled>,
    blacklist: Vec<Compiled>,
}

impl FlowFilters {
    /// Compiles both lists.
    ///
    /// # Errors
    /// [`FilterListError`] naming the list, the filter and the field.
    pub fn compile(
        whitelist: &[FlowFilter],
        blacklist: &[FlowFilter],
    ) -> Result<Self, FilterListError> {
        let compile = |list: &'static str, filters: &[FlowFilter]| {
            filters
                .iter()
                .enumerate()
                .map(|(index, filter)| {
                    Compiled::new(filter).map_err(|error| FilterListError { list, index, error })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            whitelist: compile("whitelist", whitelist)?,
            blacklist: compile("blacklist", blacklist)?,
        })
    }

    /// Whether `flow` is to be sent.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }
}

/// Which end a field is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Source,
    Destination,
}

impl End {
    fn of(self, flow: &Flow) -> Option<&Endpoint> {
        self.pick((flow.source.as_ref(), flow.destination.as_ref()))
    }

    /// The source's or the destination's of a pair.
    fn pick<T>(self, (source, destination): (T, T)) -> T {
        match self {
            Self::Source => source,
            Self::Destination => destination,
        }
    }
}

/// The checks of a source field and its destination twin, each built from
/// its values by `build` (no check for a field with no values).
fn per_end<T: Clone>(
    (source, destination): (&[T], &[T]),
    build: impl Fn(End, &[T]) -> Result<Check, FilterError>,
) -> Result<Vec<Check>, FilterError> {
    let mut checks = Vec::new();
    for (end, values) in [(End::Source, source), (End::Destination, destination)] {
        if !values.is_empty() {
            checks.push(build(end, values)?);
        }
    }
    Ok(checks)
}

#[cfg(test)]
pub(crate) mod test_flow;

#[cfg(test)]
mod tests {
    use super::test_flow::flow;
    use super::*;

    #[test]
    fn whitelist_is_any_blacklist_is_none() {
        let pod = |name: &str| FlowFilter {
            source_pod: vec![name.to_owned()],
            ..FlowFilter::default()
        };
        let rows: [(&[FlowFilter], &[FlowFilter], bool); 5] = [
            (&[], &[], true),
            (&[pod("shop/a")], &[], true),
            (&[pod("shop/x"), pod("shop/a")], &[], true),
            (&[pod("shop/x")], &[], false),
            (&[], &[pod("shop/a")], false),
        ];
        for (whitelist, blacklist, sent) in rows {
            let filters = FlowFilters::compile(whitelist, blacklist).expect("compiles");
            assert_eq!(
                filters.matches(&flow()),
                sent,
                "{whitelist:?} / {blacklist:?}"
            );
        }
    }

    #[test]
    fn an_error_names_the_list_the_filter_and_the_field() {
        let bad = FlowFilter {
            http_method: vec!["GET".into()],
            ..FlowFilter::default()
        };
        let error = FlowFilters::compile(&[], &[FlowFilter::default(), bad])
            .err()
            .expect("refused");
        assert_eq!(
            error.to_string(),
            "blacklist[1]: filter field http_method is not supported by netgov: netgov judges L3/L4 flows and sees no HTTP"
        );
    }
}
