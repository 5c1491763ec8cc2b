//! The agent's answer to "where did this connection to a Service go?":
//! a candidate is any Service frontend of the cluster state (cluster IP
//! and port, external or load-balancer IP and port, node address and node
//! port); the answer comes from the node's connection tracking.

use std::sync::Arc;

use super::shared::Shared;
use crate::capture::conntrack::{Conntrack, Endpoint, Tracked};
use crate::capture::flow_table::NatLookup;
use crate::model::Protocol;

/// Service frontends from the cluster state, translations from conntrack.
pub struct ServiceNat {
    shared: Arc<Shared>,
    /// `None` when the socket could not be opened (then every Service
    /// flow is judged against the Service's backends).
    conntrack: Option<Conntrack>,
    /// The last lookup failed (logged once per run of failures).
    failing: bool,
}

impl ServiceNat {
    /// Opens connection tracking in the agent's network namespace; a
    /// failure is logged and counted, and Service flows are then judged
    /// as addressed.
    pub fn open(shared: Arc<Shared>) -> Self {
        let conntrack = match Conntrack::open() {
            Ok(conntrack) => Some(conntrack),
            Err(error) => {
                tracing::warn!(%error, "connection tracking unavailable: Service flows are judged against the Service's backends");
                shared.metrics.count_conntrack_error();
                None
            }
        };
        Self {
            shared,
            conntrack,
            failing: false,
        }
    }
}

impl NatLookup for ServiceNat {
    fn is_candidate(&self, protocol: u8, destination: Endpoint) -> bool {
        // Without connection tracking there is no answer to wait for.
        self.conntrack.is_some()
            && self
                .shared
                .state()
                .frontend(Protocol::from_number(protocol), destination)
                .is_some()
    }

    fn translated(
        &mut self,
        protocol: u8,
        source: Endpoint,
        destination: Endpoint,
    ) -> Option<(Endpoint, Endpoint)> {
        let conntrack = self.conntrack.as_mut()?;
        match conntrack.get(protocol, source, destination) {
            Ok(tracked) => {
                self.failing = false;
                match tracked {
                    Tracked::Reply(from, to) => Some((from, to)),
                    Tracked::Missing => None,
                }
            }
            Err(error) => {
                self.shared.metrics.count_conntrack_error();
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "connection tracking lookups failing (counted in netgov_conntrack_errors_total)");
                }
                None
            }
        }
    }
}
