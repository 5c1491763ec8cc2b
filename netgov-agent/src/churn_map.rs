//! A hash map for tables whose entries come and go all the time (live
//! flows): its memory settles while the table grows, not minutes later.
//!
//! Why a plain `HashMap` does not: the standard map (hashbrown) marks a
//! removed entry's slot "deleted" when its neighbours are full, and an
//! insert cannot reuse such a slot for a new key unless the probe passes
//! it. Under steady churn the marks pile up until no free slot is left;
//! the map then rehashes in place when it is at most half full, and
//! otherwise **doubles**. A table that settled between half and 7/8 full
//! (60,000 live flows in 131,072 slots) so doubles once, at a moment set by
//! the churn (about 15 minutes at 1,000 new flows a second): the churn
//! soak's "steps" of 27 and 36 MiB at minutes 16 and 19 were the flow
//! table and the judge's tracked flows doing that, with the transient peak
//! of old and new slot arrays on top.
//!
//! [`ChurnMap`] grows as soon as it is more than half full, so it is never
//! past half when the deleted marks run out and always rehashes in place:
//! the doubling happens while the table grows (warm-up), and after that
//! churn costs no allocation. When it is less than an eighth full (a burst
//! is over) it shrinks to a quarter full, returning the memory (not to
//! half: the next insert would grow it again). The price is
//! the load: a quarter to a half instead of up to 7/8, which is where a
//! churned plain map ends anyway.
//!
//! So that a slot costs no more than a pointer, a [`ChurnMap`] holds its
//! values boxed, and a value carries its own key ([`Keyed`]): the slots,
//! two to four a live entry, are the table's largest part, and a key (a
//! flow's id, 42 bytes) in each would cost more than the entries.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// Below this many slots the map is left alone when it empties (shrinking
/// a small map saves nothing and would only reallocate back and forth).
const SHRINK_FLOOR: usize = 1024;

/// A value that carries its own key.
pub trait Keyed {
    /// The key.
    type Key: Hash + Eq;
    /// The value's key (never changes while the value is in a map).
    fn key(&self) -> &Self::Key;
}

/// A hash map of boxed values that carry their keys, growing at half load
/// and shrinking at an eighth (see the module docs). Every change goes
/// through a method here, so none can bypass the growth rule.
pub struct ChurnMap<T: Keyed> {
    table: HashTable<Box<T>>,
    hasher: RandomState,
    /// The table's capacity without deleted marks: what `capacity()` said
    /// right after it last reallocated (deleted marks only lower it).
    slots: usize,
}

impl<T: Keyed> Default for ChurnMap<T> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::new(),
            slots: 0,
        }
    }
}

impl<T: Keyed + std::fmt::Debug> std::fmt::Debug for ChurnMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Keyed> ChurnMap<T> {
    /// An empty map (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Entries it holds without reallocating, deleted marks deducted.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The value under `key`.
    pub fn get(&self, key: &T::Key) -> Option<&T> {
        self.table
            .find(self.hasher.hash_one(key), |v| v.key() == key)
            .map(|v| &**v)
    }

    /// The value under `key`, mutably.
    pub fn get_mut(&mut self, key: &T::Key) -> Option<&mut T> {
        self.table
            .find_mut(self.hasher.hash_one(key), |v| v.key() == key)
            .map(|v| &mut **v)
    }

    /// Whether a value is under `key`.
    pub fn contains_key(&self, key: &T::Key) -> bool {
        self.get(key).is_some()
    }

    /// Inserts `value` under its key, returning the value it replaces.
    pub fn insert(&mut self, value: Box<T>) -> Option<Box<T>> {
        let hash = self.hasher.hash_one(value.key());
        if let Some(held) = self.table.find_mut(hash, |v| v.key() == value.key()) {
            return Some(std::mem::replace(held, value));
        }
        self.make_room();
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, value, |v| hasher.hash_one(v.key()));
        None
    }

    /// The value under `key`, inserted from `make` when missing.
    pub fn get_or_insert_with(&mut self, key: &T::Key, make: impl FnOnce() -> T) -> &mut T {
        if !self.contains_key(key) {
            self.make_room();
            let hasher = &self.hasher;
            self.table
                .insert_unique(hasher.hash_one(key), Box::new(make()), |v| {
                    hasher.hash_one(v.key())
                });
        }
        self.get_mut(key).expect("inserted")
    }

    /// Every value.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.table.iter().map(|v| &**v)
    }

    /// Every value, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.table.iter_mut().map(|v| &mut **v)
    }

    /// Removes the value under `key`.
    pub fn remove(&mut self, key: &T::Key) -> Option<Box<T>> {
        let removed = self
            .table
            .find_entry(self.hasher.hash_one(key), |v| v.key() == key)
            .ok()
            .map(|entry| entry.remove().0);
        if removed.is_some() {
            self.shrink_after_burst();
        }
        removed
    }

    /// Keeps the values `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        self.table.retain(|v| keep(v));
        self.shrink_after_burst();
    }

    /// Removes every value, returning them; the memory goes with them.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<T>> {
        self.slots = 0;
        std::mem::take(&mut self.table).into_iter()
    }

    /// Grows the table when the next insert would make it more than half
    /// full, so a later rehash forced by deleted marks is done in place.
    fn make_room(&mut self) {
        let after_insert = self.table.len() + 1;
        if after_insert > self.slots / 2 {
            // More than the table holds without deleted marks: it then
            // reallocates to twice the slots (and drops the marks).
            let additional = (self.slots + 1).saturating_sub(self.table.len());
            let hasher = &self.hasher;
            self.table
                .reserve(additional.max(1), |v| hasher.hash_one(v.key()));
            self.slots = self.table.capacity();
        }
    }

    /// Returns the memory of a burst that is over.
    fn shrink_after_burst(&mut self) {
        if self.slots > SHRINK_FLOOR && self.table.len() < self.slots / 8 {
            let hasher = &self.hasher;
            self.table
                .shrink_to(self.table.len() * 4, |v| hasher.hash_one(v.key()));
            self.slots = self.table.capacity();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A value that is its own key.
    #[derive(Debug, PartialEq)]
    struct Key(u64);

    impl Keyed for Key {
        type Key = u64;
        fn key(&self) -> &u64 {
            &self.0
        }
    }

    /// Keeps `live` entries while `churn` keys come and go (oldest out),
    /// and returns the capacity's high-water mark once warm and at the end.
    fn churn(
        live: usize,
        churn: usize,
        mut insert: impl FnMut(u64),
        mut remove: impl FnMut(u64),
        capacity: impl Fn() -> usize,
    ) -> (usize, usize) {
        let key = |i: usize| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for i in 0..live {
            insert(key(i));
        }
        let warm = capacity();
        let mut high = warm;
        for i in live..live + churn {
            insert(key(i));
            remove(key(i - live));
            high = high.max(capacity());
        }
        (warm, high)
    }

    #[test]
    fn a_plain_map_doubles_long_after_warm_up_and_a_churn_map_does_not() {
        // 60,027 live flows, as in the churn soak, and 15 minutes of
        // 1,000 new flows a second.
        let (live, turns) = (60_027, 900_000);
        let plain = std::cell::RefCell::new(HashMap::new());
        let (warm, high) = churn(
            live,
            turns,
            |k| {
                plain.borrow_mut().insert(k, ());
            },
            |k| {
                plain.borrow_mut().remove(&k);
            },
            || plain.borrow().capacity(),
        );
        assert_eq!((warm, high), (114_688, 229_376), "the reason for ChurnMap");

        let map = std::cell::RefCell::new(ChurnMap::new());
        let (warm, high) = churn(
            live,
            turns,
            |k| {
                map.borrow_mut().insert(Box::new(Key(k)));
            },
            |k| {
                map.borrow_mut().remove(&k);
            },
            || map.borrow().capacity(),
        );
        assert_eq!((warm, high), (229_376, 229_376));
        assert_eq!(map.borrow().len(), live);
    }

    #[test]
    fn shrinks_when_a_burst_is_over_and_grows_again() {
        let mut map = ChurnMap::new();
        for k in 0..100_000 {
            map.get_or_insert_with(&k, || Key(k));
        }
        assert_eq!((map.len(), map.slots), (100_000, 229_376));
        map.retain(|v| v.0 < 30_000);
        assert_eq!(
            (map.len(), map.slots),
            (30_000, 229_376),
            "an eighth or more"
        );
        for k in 28_000..30_000 {
            assert_eq!(map.remove(&k), Some(Box::new(Key(k))));
        }
        assert_eq!(map.len(), 28_000);
        assert_eq!(map.slots, 114_688, "under an eighth: a quarter full");
        assert!(map.capacity() <= 114_688, "deleted marks lower it");
        assert_eq!(map.get(&27_999), Some(&Key(27_999)));
        assert_eq!(map.get_mut(&28_000), None);
        for k in 28_000..40_000 {
            assert_eq!(map.insert(Box::new(Key(k))), None);
        }
        assert_eq!((map.len(), map.slots), (40_000, 114_688), "room to grow");
        for k in 40_000..60_000 {
            map.insert(Box::new(Key(k)));
        }
        assert_eq!((map.len(), map.slots), (60_000, 229_376));
        assert_eq!(map.drain().count(), 60_000);
        assert_eq!((map.len(), map.slots, map.capacity()), (0, 0, 0));
    }
}
