//! The last N Hubble events, and the cursor each follower reads them by.
//!
//! One writer (the judge stage) pushes; readers copy pointers under a
//! short lock (at most one per event held) and never hold it while they
//! filter or send. Each event has a sequence number; a reader keeps the
//! numbers of the events it still has to send, not the events, so a client
//! that does not read keeps nothing alive the ring has let go. When the
//! ring has moved past a number (the reader was slower than the judge for
//! a whole ring), it is told how many it missed, as Hubble tells it: a
//! `LostEvent` from `HUBBLE_RING_BUFFER`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::proto::flow::Flow;

/// Cilium's default ring capacity (`--hubble-event-buffer-capacity`).
pub const DEFAULT_CAPACITY: usize = 4095;

/// The largest capacity accepted, Cilium's (about 180 MiB of events at
/// 2.8 KiB each, as measured).
pub const MAX_CAPACITY: usize = 65_535;

/// What a follower reads at its cursor.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events overwritten before the follower read them.
    pub lost: u64,
    /// The events from the cursor on, oldest first.
    pub events: Vec<Arc<Flow>>,
    /// The cursor after them.
    pub next: u64,
}

/// How full the ring is, for `ServerStatus` and `GetNodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStatus {
    /// Events in the ring.
    pub held: u64,
    /// Its capacity.
    pub capacity: u64,
    /// Events ever pushed.
    pub seen: u64,
}

struct Ring {
    events: VecDeque<Arc<Flow>>,
    /// Sequence number of `events[0]`.
    first: u64,
}

/// The ring of Hubble events.
pub struct EventRing {
    ring: Mutex<Ring>,
    capacity: usize,
    /// The sequence number of the next event: followers wait on it.
    next: watch::Sender<u64>,
}

impl EventRing {
    /// An empty ring of `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                first: 0,
            }),
            capacity,
            next: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event, overwriting the oldest when full.
    pub fn push(&self, flow: Flow) {
        let next = {
            let mut ring = self.lock();
            if ring.events.len() == self.capacity {
                ring.events.pop_front();
                ring.first += 1;
            }
            ring.events.push_back(Arc::new(flow));
            ring.first + ring.events.len() as u64
        };
        self.next.send_replace(next);
    }

    /// Every event held with its sequence number, oldest first, and the
    /// cursor after them.
    pub fn snapshot(&self) -> (Vec<(u64, Arc<Flow>)>, u64) {
        let ring = self.lock();
        let next = ring.first + ring.events.len() as u64;
        let held = (ring.first..).zip(ring.events.iter().cloned()).collect();
        (held, next)
    }

    /// The event numbered `seq`, unless the ring has let it go.
    pub fn get(&self, seq: u64) -> Option<Arc<Flow>> {
        let ring = self.lock();
        let index = usize::try_from(seq.checked_sub(ring.first)?).ok()?;
        ring.events.get(index).cloned()
    }

    /// How many events held are at or after `since` (Unix nanoseconds):
    /// the ring is in time order, so from the newest back.
    pub fn count_since(&self, since: i128) -> u64 {
        let ring = self.lock();
        let recent = ring
            .events
            .iter()
            .rev()
            .take_while(|event| {
                event
                    .time
                    .as_ref()
                    .is_some_and(|t| super::convert::unix_nanos(t) >= since)
            })
            .count();
        recent as u64
    }

    /// At most `max` events from `cursor` on (see [`Batch`]): a reader
    /// holds no more of the ring than it is about to send.
    pub fn read_from(&self, cursor: u64, max: usize) -> Batch {
        let ring = self.lock();
        let lost = ring.first.saturating_sub(cursor);
        let skip = cursor.saturating_sub(ring.first) as usize;
        let events: Vec<Arc<Flow>> = ring.events.iter().skip(skip).take(max).cloned().collect();
        let next = ring.first + (skip + events.len()) as u64;
        Batch { lost, events, next }
    }

    /// Waits until an event past `cursor` exists.
    pub async fn wait_past(&self, cursor: u64) {
        let mut next = self.next.subscribe();
        // The sender lives as long as the ring: no error while we hold it.
        let _ = next.wait_for(|next| *next > cursor).await;
    }

    /// How full it is.
    pub fn status(&self) -> RingStatus {
        let ring = self.lock();
        RingStatus {
            held: ring.events.len() as u64,
            capacity: self.capacity as u64,
            seen: ring.first + ring.events.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uuid: &str) -> Flow {
        Flow {
            uuid: uuid.into(),
            ..Flow::default()
        }
    }

    fn uuids(events: &[Arc<Flow>]) -> Vec<&str> {
        events.iter().map(|e| e.uuid.as_str()).collect()
    }

    #[test]
    fn a_full_ring_overwrites_the_oldest_and_a_late_cursor_is_told_what_it_lost() {
        let ring = EventRing::new(3);
        for uuid in ["a", "b", "c", "d", "e"] {
            ring.push(event(uuid));
        }
        assert_eq!(
            ring.status(),
            RingStatus {
                held: 3,
                capacity: 3,
                seen: 5
            }
        );
        let (held, next) = ring.snapshot();
        let seqs: Vec<u64> = held.iter().map(|(seq, _)| *seq).collect();
        let flows: Vec<Arc<Flow>> = held.into_iter().map(|(_, flow)| flow).collect();
        assert_eq!(
            (seqs, uuids(&flows), next),
            (vec![2, 3, 4], vec!["c", "d", "e"], 5)
        );
        assert_eq!(ring.get(4).map(|f| f.uuid.clone()), Some("e".to_owned()));
        assert!(
            ring.get(1).is_none() && ring.get(5).is_none(),
            "let go, not yet"
        );
        let late = ring.read_from(0, 10);
        assert_eq!(
            (late.lost, uuids(&late.events), late.next),
            (2, vec!["c", "d", "e"], 5)
        );
        let current = ring.read_from(4, 10);
        assert_eq!(
            (current.lost, uuids(&current.events), current.next),
            (0, vec!["e"], 5)
        );
        let ahead = ring.read_from(5, 10);
        let capped = ring.read_from(2, 2);
        assert_eq!(
            (capped.lost, uuids(&capped.events), capped.next),
            (0, vec!["c", "d"], 4),
            "a reader takes no more than it asks for"
        );
        assert_eq!((ahead.lost, ahead.events.len(), ahead.next), (0, 0, 5));
    }

    #[tokio::test]
    async fn a_waiting_follower_wakes_on_the_next_event() {
        let ring = Arc::new(EventRing::new(4));
        let waiter = tokio::spawn({
            let ring = Arc::clone(&ring);
            async move {
                ring.wait_past(0).await;
                ring.read_from(0, 10)
            }
        });
        tokio::task::yield_now().await;
        ring.push(event("a"));
        let batch = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(uuids(&batch.events), vec!["a"]);
    }
}
