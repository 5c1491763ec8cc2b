//! Translated conversations: a connection to a Service address is seen
//! before DNAT where the client's traffic leaves its pod (client →
//! ClusterIP:port) and after it where the backend receives it (client →
//! backend:targetPort). Both views are one flow, filed under the
//! translated conversation and carrying the address the client used
//! ([`FlowRecord::original_dst`](super::FlowRecord)).
//!
//! # Decisions
//! - The table asks [`NatLookup::is_candidate`] only for conversations
//!   it has not seen, and [`NatLookup::translated`] (connection tracking)
//!   only for candidates: a lookup per new connection to a Service, none
//!   for the rest.
//! - A candidate whose translation is not known yet is held back from
//!   live reports and asked again at each drain for
//!   [`NAT_RETRY`](self::NAT_RETRY_NS) — a connection dropped before the
//!   node confirmed its tracking entry (in a forward filter) never gets
//!   one; it is then reported as it was addressed, to the Service.
//! - When the node also masqueraded the client (kube-proxy does for node
//!   ports), the flow's conversation has the node's address, but its
//!   record names the client that sent it: policies are judged for the
//!   pod that opened the connection.
//! - A view filed under a conversation whose A and B are the other way
//!   round has its directions swapped as it is read, so every view of a
//!   flow counts in the flow's terms.

use std::num::NonZeroU64;

use super::{
    Alias, Endpoint, Flow, FlowId, FlowKey, FlowTable, InterfaceView, Translated, conversation_of,
};

/// How long a possibly translated conversation waits for its tracking
/// entry before it is reported as addressed.
pub const NAT_RETRY_NS: u64 = 2_000_000_000;

/// Where connections to translated addresses really went.
pub trait NatLookup {
    /// Whether `destination` may be translated for `protocol` (an IP
    /// protocol number): a Service's cluster IP and port, a node port, an
    /// external or load-balancer IP.
    fn is_candidate(&self, protocol: u8, destination: Endpoint) -> bool;

    /// The reply tuple `(source, destination)` of the connection tracked
    /// as `source → destination`, or `None` while it is not tracked.
    fn translated(
        &mut self,
        protocol: u8,
        source: Endpoint,
        destination: Endpoint,
    ) -> Option<(Endpoint, Endpoint)>;
}

/// Translates nothing (`netgov capture`, or no Service in the cluster).
#[derive(Debug, Default)]
pub struct NoNat;

impl NatLookup for NoNat {
    fn is_candidate(&self, _: u8, _: Endpoint) -> bool {
        false
    }

    fn translated(&mut self, _: u8, _: Endpoint, _: Endpoint) -> Option<(Endpoint, Endpoint)> {
        None
    }
}

/// What the lookup made of a new conversation.
enum Translation {
    /// It belongs to the flow of `target`.
    To {
        target: FlowId,
        /// `target` has A and B the other way round.
        swapped: bool,
        /// The destination the client addressed.
        original_dst: Endpoint,
        /// The client, and what it was translated to when the node also
        /// masqueraded it (kube-proxy does for node ports).
        client: (Endpoint, Endpoint),
    },
    /// It may be translated; not known yet.
    Pending,
}

/// Turns a view's counts to the other orientation.
fn flip(view: &mut InterfaceView) {
    view.stats = view.stats.swapped();
    if let Some(earlier) = view.rare.as_mut().and_then(|rare| rare.earlier.as_mut()) {
        earlier.packets.swap(0, 1);
        earlier.bytes.swap(0, 1);
    }
    view.swapped = !view.swapped;
}

impl FlowTable {
    /// The conversation of the flow a kernel key belongs to.
    pub(super) fn flow_of(&self, key: &FlowKey) -> FlowId {
        let conversation = conversation_of(key);
        self.aliases
            .get(&conversation)
            .map_or(conversation, |a| a.target)
    }

    /// Whether a kernel key's directions are the other way round from its
    /// flow's.
    pub(super) fn swapped(&self, key: &FlowKey) -> bool {
        self.aliases
            .get(&conversation_of(key))
            .is_some_and(|a| a.swapped)
    }

    /// The conversation of the flow `key` belongs to, creating the flow
    /// (and looking up its translation) when the conversation is new.
    pub(super) fn locate(&mut self, key: &FlowKey, now_ns: u64) -> FlowId {
        let conversation = self.flow_of(key);
        if self.flows.contains_key(&conversation) {
            return conversation;
        }
        match self.translate(conversation) {
            Some(Translation::To {
                target,
                swapped,
                original_dst,
                client,
            }) => {
                self.join(conversation, target, swapped, original_dst, client);
                target
            }
            pending => {
                self.flows.insert(Flow {
                    conversation,
                    nat_pending_since: pending
                        .map(|_| NonZeroU64::new(now_ns).unwrap_or(NonZeroU64::MIN)),
                    ..Flow::default()
                });
                conversation
            }
        }
    }

    fn translate(&mut self, conversation: FlowId) -> Option<Translation> {
        let protocol = conversation.protocol().number();
        let (client, destination) = if self.nat.is_candidate(protocol, conversation.b()) {
            (conversation.a(), conversation.b())
        } else if self.nat.is_candidate(protocol, conversation.a()) {
            (conversation.b(), conversation.a())
        } else {
            return None;
        };
        let Some((reply_src, reply_dst)) = self.nat.translated(protocol, client, destination)
        else {
            return Some(Translation::Pending);
        };
        if reply_src == destination && reply_dst == client {
            // Tracked, but not translated: the address is its own.
            return None;
        }
        let target = FlowId::new(reply_dst, reply_src, conversation.protocol());
        if target == conversation {
            // Connection tracking matches either direction's tuple: this
            // is the answer side of a translated connection (its
            // masqueraded port happened to look like a node port).
            return None;
        }
        Some(Translation::To {
            target,
            swapped: (client == conversation.a()) != (reply_dst == target.a()),
            original_dst: destination,
            client: (client, reply_dst),
        })
    }

    /// The flow of `conversation`, created empty when missing.
    fn flow_at(&mut self, conversation: FlowId) -> &mut Flow {
        self.flows.get_or_insert_with(&conversation, || Flow {
            conversation,
            ..Flow::default()
        })
    }

    /// Files the pre-translation conversation `alias` under `target`'s
    /// flow, creating it when missing.
    fn join(
        &mut self,
        alias: FlowId,
        target: FlowId,
        swapped: bool,
        original_dst: Endpoint,
        (client, translated_client): (Endpoint, Endpoint),
    ) {
        self.aliases.insert(Alias {
            alias,
            target,
            swapped,
        });
        let flow = self.flow_at(target);
        let translated = flow.translated.get_or_insert_with(|| {
            Box::new(Translated {
                original_dst,
                aliases: Vec::new(),
                source_nat: None,
            })
        });
        translated.aliases.push(alias);
        translated.original_dst = original_dst;
        if translated_client != client {
            translated.source_nat = Some((translated_client, client));
        }
        flow.changed = true;
    }

    /// Asks again for the conversations still waiting for their
    /// translation; moves the views of those now known into their flow,
    /// and gives up on those that waited [`NAT_RETRY_NS`].
    pub(super) fn retry_translations(&mut self, now_ns: u64) {
        let pending: Vec<(FlowId, u64)> = self
            .flows
            .iter()
            .filter_map(|flow| Some((flow.conversation, flow.nat_pending_since?.get())))
            .collect();
        for (conversation, since) in pending {
            match self.translate(conversation) {
                Some(Translation::To {
                    target,
                    swapped,
                    original_dst,
                    client,
                }) => {
                    let Some(mut waiting) = self.flows.remove(&conversation) else {
                        continue;
                    };
                    for view in &mut waiting.views {
                        if swapped {
                            flip(view);
                        }
                        // Its key's conversation is now an alias.
                        let rare = view.rare_mut();
                        rare.alias.get_or_insert(conversation);
                    }
                    self.join(conversation, target, swapped, original_dst, client);
                    let waiting_aliases = waiting
                        .translated
                        .take()
                        .map_or_else(Vec::new, |t| t.aliases);
                    for &alias in &waiting_aliases {
                        self.aliases.insert(Alias {
                            alias,
                            target,
                            swapped,
                        });
                    }
                    let flow = self.flows.get_mut(&target).expect("joined");
                    flow.translated
                        .as_mut()
                        .expect("joined")
                        .aliases
                        .extend(waiting_aliases);
                    flow.views.append(&mut waiting.views);
                }
                Some(Translation::Pending) if now_ns.saturating_sub(since) < NAT_RETRY_NS => {}
                _ => {
                    if let Some(flow) = self.flows.get_mut(&conversation) {
                        flow.nat_pending_since = None;
                    }
                }
            }
        }
    }
}
