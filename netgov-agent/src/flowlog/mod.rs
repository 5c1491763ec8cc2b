//! The flow log, format 1: one JSON line per judged flow whose verdict or
//! enforcement is new, written by the agent ([`FlowLog`], each line a
//! [`FlowEntry`]) and by `/flows`, and read back by `replay`, `audit`,
//! `advise` and `observe` ([`read`], each flow a [`RecordedFlow`]).
//!
//! One line holds the capture record (`src`, `src_port`, `dst`,
//! `dst_port`, `original_dst`, `translated_src`, `protocol`, counters,
//! `first_seen`, `last_seen` in RFC 3339, ...), both ends' identities, the
//! verdict with both sides' explanations, `denied_by`, `enforcement`,
//! `unexpected_egress`, the destination's names, the port judged, the
//! Service, the staged verdict, and for each pod end the labels, namespace
//! labels and named ports replay needs (`src_context`, `dst_context`).
//! The round trip is pinned by this module's test: what the writer writes,
//! the reader reads whole.

pub mod filter;
mod read;
mod write;

pub use filter::FlowFilter;
pub use read::{LineError, RecordedFlow, RecordedIdentity, RecordedName, RecordedTime, read};
pub use write::{FlowEntry, FlowLog, FlowLogError, FlowLogTarget};

/// The flow log's format: 1 adds `format` and, for pod ends, the
/// `src_context` / `dst_context` replay needs (labels, namespace labels,
/// named ports). Lines without `format` are format 0.
pub const FORMAT: u32 = 1;

#[cfg(test)]
mod tests;
