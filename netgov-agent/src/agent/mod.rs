//! `netgov agent`, split by concern:
//!
//! - [`run`]: options, errors and the wiring of the stages;
//! - [`sink`]: the capture's sink, handing flows to the judge without
//!   waiting;
//! - [`pipeline`]: the judge stage's state machine (what is counted when);
//! - [`flow_log`]: the JSON Lines flow log;
//! - [`nat`]: where connections to Services went (conntrack);
//! - [`recent`]: the latest judged flows behind `/flows`;
//! - [`posture`]: the metrics derived from the cluster state;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/flows`;
//! - [`shared`]: what these tasks share.
//!
//! The judgement itself is pure and lives in [`crate::judge`].

mod departed;
pub mod http;
pub mod listener;
pub mod memory;
pub mod nat;
pub mod pipeline;
pub mod posture;
pub mod recent;
pub mod run;
pub mod shared;
pub mod sink;
pub mod staged;

#[cfg(test)]
pub(crate) mod test_support;
