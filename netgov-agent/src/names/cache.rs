//! The names each pod learned, by the address they name, until they
//! expire; and the server name of each recent connection.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use super::{DestinationName, Hostname, NameSource};
use crate::engine::Resolved;
use crate::model::PodRef;

/// How long names are kept, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameLimits {
    /// A DNS name is kept at least this long, whatever its TTL:
    /// applications (and language runtimes) keep answers longer than some
    /// resolvers say, and connect after the TTL passed.
    pub min_ttl: Duration,
    /// ... and at most this long.
    pub max_ttl: Duration,
    /// Entries (a pod's name for an address, or a connection's server name)
    /// kept at most; the ones closest to expiry go first, counted.
    pub max_entries: usize,
    /// Entries one pod (or client address) holds at most: past it, its own
    /// closest to expiry go, counted — a busy resolver pod or a flood of
    /// answers cannot push out its neighbours' names.
    pub max_per_pod: usize,
}

impl Default for NameLimits {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            max_entries: 100_000,
            max_per_pod: 10_000,
        }
    }
}

/// How long a connection's server name is kept: past the time its flow
/// is first judged, and the wait for a name (see `agent::pipeline`).
const SERVER_NAME_TTL: Duration = Duration::from_secs(120);

/// How long an expired name is still kept: a flow that started before it
/// expired is judged up to a few seconds later, and is named as of its
/// start.
const EXPIRED_KEPT: Duration = Duration::from_secs(30);

/// One learned name's expiry, in the expiry index.
type Expiry = (i128, u64, Slot);

/// Whose names: a pod the cluster state knows (all its addresses, both
/// families, share them; a later pod reusing an address does not inherit
/// them), else an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Client {
    /// A pod.
    Pod(PodRef),
    /// An address nothing in the cluster state owns.
    Address(IpAddr),
}

impl Client {
    /// Whose names `ip` carries, given who the cluster state says owns
    /// it: the pod's, else the address's own.
    pub fn of(owner: Resolved<'_>, ip: IpAddr) -> Self {
        match owner {
            Resolved::Pod(pod) => Self::Pod(pod.id()),
            _ => Self::Address(ip),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Slot {
    /// A pod and an address it resolved.
    Resolved(Client, IpAddr),
    /// A connection: client and server.
    Connection(SocketAddr, SocketAddr),
}

#[derive(Debug)]
struct Learned {
    name: Hostname,
    /// When it was first answered (Unix nanoseconds; again after it had
    /// expired): an answer that came after a flow started did not lead it
    /// there.
    learned: i128,
    /// When it was last answered: the latest answers are shown first and
    /// kept longest.
    answered: i128,
    /// Unix nanoseconds.
    expires: i128,
    /// Its key in the expiry indexes.
    sequence: u64,
}

/// Names one address may carry for one pod: a CDN's address answers for
/// thousands of names, and each flow to it would copy them all.
const MAX_NAMES_PER_ADDRESS: usize = 16;

#[derive(Debug, Default)]
struct Entries {
    /// The names of each slot.
    by_slot: HashMap<Slot, Vec<Learned>>,
    /// Every name's expiry, soonest first.
    expiry: BTreeSet<Expiry>,
    /// Each owner's names' expiries, soonest first: a pod over its quota
    /// loses its own names, not its neighbours'.
    by_owner: HashMap<Client, BTreeSet<Expiry>>,
    sequence: u64,
    evicted: u64,
}

/// Names learned per pod, shared by the capture (one writer) and the judge.
#[derive(Debug)]
pub struct NameCache {
    limits: NameLimits,
    entries: Mutex<Entries>,
}

impl NameCache {
    /// An empty cache.
    pub fn new(limits: NameLimits) -> Self {
        Self {
            limits,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `pod` resolved `name` to `address` at `now` (Unix
    /// nanoseconds), for `ttl` within the limits.
    pub fn resolved(&self, pod: Client, address: IpAddr, name: Hostname, ttl: Duration, now: i128) {
        let ttl = ttl.clamp(self.limits.min_ttl, self.limits.max_ttl);
        self.insert(
            Slot::Resolved(pod, address),
            name,
            now + ttl.as_nanos() as i128,
            now,
        );
    }

    /// Records the server name a connection's ClientHello asked for.
    pub fn server_name(&self, client: SocketAddr, server: SocketAddr, name: Hostname, now: i128) {
        let expires = now + SERVER_NAME_TTL.as_nanos() as i128;
        self.insert(Slot::Connection(client, server), name, expires, now);
    }

    fn insert(&self, slot: Slot, name: Hostname, expires: i128, now: i128) {
        let mut entries = self.lock();
        entries.expire(now - EXPIRED_KEPT.as_nanos() as i128);
        entries.sequence += 1;
        let sequence = entries.sequence;
        // Learned again while it holds: one entry, from its first answer
        // to the later expiry, answered now. An expired one stays as it
        // was (flows from its time are still named by it) beside the new.
        let known = entries.by_slot.get(&slot).and_then(|names| {
            names
                .iter()
                .find(|l| l.name == name && l.expires >= now)
                .map(|l| (l.expires, l.sequence, l.learned))
        });
        let (learned, expires) = match known {
            Some((old_expires, old_sequence, learned)) => {
                entries.remove((old_expires, old_sequence, slot.clone()));
                (learned, old_expires.max(expires))
            }
            None => (now, expires),
        };
        entries
            .by_slot
            .entry(slot.clone())
            .or_default()
            .push(Learned {
                name,
                learned,
                answered: now,
                expires,
                sequence,
            });
        entries.expiry.insert((expires, sequence, slot.clone()));
        let owner = slot.owner();
        entries.by_owner.entry(owner.clone()).or_default().insert((
            expires,
            sequence,
            slot.clone(),
        ));
        // Past 16 names, the address loses the one answered longest ago;
        // then, past its quota, the owner its soonest to expire.
        let stalest = entries
            .by_slot
            .get(&slot)
            .filter(|names| names.len() > MAX_NAMES_PER_ADDRESS)
            // Expired ones (kept a while) first.
            .and_then(|names| {
                names
                    .iter()
                    .min_by_key(|l| (l.expires >= now, l.answered, l.sequence))
            })
            .map(|l| (l.expires, l.sequence, slot.clone()));
        if let Some(stalest) = stalest {
            entries.evict(stalest, now);
        }
        let over_quota = entries
            .by_owner
            .get(&owner)
            .filter(|owned| owned.len() > self.limits.max_per_pod)
            .and_then(|owned| owned.first().cloned());
        if let Some(first) = over_quota {
            entries.evict(first, now);
        }
        while entries.expiry.len() > self.limits.max_entries {
            let Some(first) = entries.expiry.first().cloned() else {
                break;
            };
            entries.evict(first, now);
        }
    }

    /// The names of a flow's destination, as of its first packet `at`
    /// (Unix nanoseconds): what its source pod — known by any of `pods`
    /// (the pod, and its address: an answer read before the cluster state
    /// knew the pod is filed under the address) — resolved to the
    /// destination's address, the latest answer first; then the server
    /// name of its connection (`client` → `server`). Each name once.
    pub fn names(
        &self,
        pods: &[Client],
        (client, server): (SocketAddr, SocketAddr),
        at: i128,
    ) -> Vec<DestinationName> {
        let entries = self.lock();
        let mut resolved: Vec<&Learned> = pods
            .iter()
            .filter_map(|pod| {
                entries
                    .by_slot
                    .get(&Slot::Resolved(pod.clone(), server.ip()))
            })
            .flatten()
            .filter(|l| l.learned <= at && l.expires >= at)
            .collect();
        // The latest answer first; within one, the chain's order.
        resolved.sort_by_key(|l| (std::cmp::Reverse(l.answered), l.sequence));
        let mut names: Vec<DestinationName> = Vec::new();
        let mut add = |name: &Hostname, learned| {
            if !names.iter().any(|n| n.name == *name) {
                names.push(DestinationName {
                    name: name.clone(),
                    learned,
                });
            }
        };
        for l in resolved {
            add(&l.name, NameSource::Dns);
        }
        // A server name is its connection's, however late it came — but
        // not before the flow began: that was an earlier connection on the
        // same addresses and ports.
        let mut hellos: Vec<&Learned> = entries
            .by_slot
            .get(&Slot::Connection(client, server))
            .into_iter()
            .flatten()
            .filter(|l| l.learned >= at && l.expires >= at)
            .collect();
        hellos.sort_by_key(|l| (std::cmp::Reverse(l.answered), l.sequence));
        for l in hellos {
            add(&l.name, NameSource::Sni);
        }
        names
    }

    /// Entries held, and entries evicted for room since start.
    pub fn size(&self) -> (usize, u64) {
        let entries = self.lock();
        (entries.expiry.len(), entries.evicted)
    }
}

impl Slot {
    /// Whose quota the entry counts against: the pod, or the client's
    /// address for a connection's server name.
    fn owner(&self) -> Client {
        match self {
            Slot::Resolved(pod, _) => pod.clone(),
            Slot::Connection(client, _) => Client::Address(client.ip()),
        }
    }
}

impl Entries {
    /// Drops `key` for room; counted when it had not expired at `now`.
    fn evict(&mut self, key: Expiry, now: i128) {
        if key.0 >= now {
            self.evicted += 1;
        }
        self.remove(key);
    }

    /// Drops every name expired before `before`.
    fn expire(&mut self, before: i128) {
        while let Some(first) = self.expiry.first().cloned() {
            if first.0 >= before {
                break;
            }
            self.remove(first);
        }
    }

    fn remove(&mut self, key: Expiry) {
        self.expiry.remove(&key);
        let owner = key.2.owner();
        if let Some(owned) = self.by_owner.get_mut(&owner) {
            owned.remove(&key);
            if owned.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
        let (_, sequence, slot) = key;
        if let Some(names) = self.by_slot.get_mut(&slot) {
            names.retain(|l| l.sequence != sequence);
            if names.is_empty() {
                self.by_slot.remove(&slot);
            }
        }
    }
}

#[cfg(test)]
mod tests;
