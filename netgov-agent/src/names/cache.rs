//! The names each pod learned, by the address they name, until they
//! expire; and the server name of each recent connection.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use super::{DestinationName, Hostname, NameSource};

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
}

impl Default for NameLimits {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            max_entries: 100_000,
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
    /// A pod, by `namespace/name`.
    Pod(std::sync::Arc<str>),
    /// An address nothing in the cluster state owns.
    Address(IpAddr),
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
    /// When it was first learned (Unix nanoseconds): an answer that came
    /// after a flow started did not lead it there.
    learned: i128,
    /// Unix nanoseconds.
    expires: i128,
    /// Its key in the expiry index.
    sequence: u64,
}

#[derive(Debug, Default)]
struct Entries {
    /// The names of each slot, in the order learned.
    by_slot: HashMap<Slot, Vec<Learned>>,
    /// Every name's expiry, soonest first.
    expiry: BTreeSet<Expiry>,
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
        let Entries {
            by_slot, expiry, ..
        } = &mut *entries;
        let names = by_slot.entry(slot.clone()).or_default();
        if let Some(known) = names.iter_mut().find(|l| l.name == name) {
            expiry.remove(&(known.expires, known.sequence, slot.clone()));
            known.expires = known.expires.max(expires);
            known.sequence = sequence;
            expiry.insert((known.expires, sequence, slot));
        } else {
            names.push(Learned {
                name,
                learned: now,
                expires,
                sequence,
            });
            expiry.insert((expires, sequence, slot));
        }
        while entries.expiry.len() > self.limits.max_entries {
            let Some(first) = entries.expiry.first().cloned() else {
                break;
            };
            entries.remove(first);
            entries.evicted += 1;
        }
    }

    /// The names of a flow's destination, as of its first packet `at`
    /// (Unix nanoseconds): what its source `pod` resolved to the
    /// destination's address, and the server name of its connection
    /// (`client` → `server`). DNS names first, each once.
    pub fn names(
        &self,
        pod: &Client,
        (client, server): (SocketAddr, SocketAddr),
        at: i128,
    ) -> Vec<DestinationName> {
        let entries = self.lock();
        // A resolved name counts from its answer on; a server name is its
        // connection's, however late it came.
        let valid = |slot: Slot| {
            let since_answer = matches!(slot, Slot::Resolved(..));
            entries
                .by_slot
                .get(&slot)
                .into_iter()
                .flatten()
                .filter(move |l| l.expires >= at && (!since_answer || l.learned <= at))
                .map(|l| l.name.clone())
        };
        let mut names: Vec<DestinationName> = valid(Slot::Resolved(pod.clone(), server.ip()))
            .map(|name| DestinationName {
                name,
                learned: NameSource::Dns,
            })
            .collect();
        for name in valid(Slot::Connection(client, server)) {
            names.push(DestinationName {
                name,
                learned: NameSource::Sni,
            });
        }
        names
    }

    /// Entries held, and entries evicted for room since start.
    pub fn size(&self) -> (usize, u64) {
        let entries = self.lock();
        (entries.expiry.len(), entries.evicted)
    }
}

impl Entries {
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
#[path = "cache_tests.rs"]
mod tests;
