//! Values many pods share, held once: label sets, named ports, workloads,
//! namespace and node names, policy lists. Pods of one ReplicaSet differ
//! in their name and IPs only, and every agent holds every pod of the
//! cluster, so a value each pod kept for itself would be paid 150,000
//! times over at Kubernetes' limits.
//!
//! Interned values are immutable: a pod whose labels change gets another
//! shared set, and a departed pod keeps the set it had.

use std::hash::Hash;
use std::sync::Arc;

use hashbrown::{Equivalent, HashSet};

/// Values below this many are never swept: a sweep visits them all.
const MIN_SWEEP: usize = 1024;

/// One shared copy of each distinct value in use.
#[derive(Debug)]
pub(super) struct Interner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// Values are swept when there are this many: a quarter more than the
    /// last sweep kept, so values no pod holds cost at most a quarter of
    /// those in use (under churn, relabelled and departed pods leave theirs
    /// behind at a steady rate), and sweeping costs a constant share of
    /// interning.
    sweep_at: usize,
}

// A copy shares the values (they are immutable).
impl<T: ?Sized> Clone for Interner<T> {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
            sweep_at: self.sweep_at,
        }
    }
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Self {
            values: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of what `value` stands for (a value, or another
    /// form of it), made by `share` when there is none.
    pub(super) fn intern_with<Q: Hash + Equivalent<Arc<T>> + ?Sized>(
        &mut self,
        value: &Q,
        share: impl FnOnce(&Q) -> Arc<T>,
    ) -> Arc<T> {
        match self.values.get(value) {
            Some(shared) => Arc::clone(shared),
            None => self.insert(share(value)),
        }
    }

    fn insert(&mut self, shared: Arc<T>) -> Arc<T> {
        if self.values.len() >= self.sweep_at {
            // Held here only: nothing uses the value any more, and nothing
            // can take it again but through this interner.
            self.values.retain(|value| Arc::strong_count(value) > 1);
            self.sweep_at = (self.values.len() + self.values.len() / 4).max(MIN_SWEEP);
        }
        self.values.insert(Arc::clone(&shared));
        shared
    }

    /// Distinct values held (used or not yet swept).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The shared copy of `value`.
    pub(super) fn intern(&mut self, value: T) -> Arc<T> {
        match self.values.get(&value) {
            Some(shared) => Arc::clone(shared),
            None => self.insert(Arc::new(value)),
        }
    }
}

/// A `str` looked up as the `String` it would make.
struct Text<'a>(&'a str);

impl Hash for Text<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `String` hashes: as its `str`.
        self.0.hash(state);
    }
}

impl Equivalent<Arc<String>> for Text<'_> {
    fn equivalent(&self, shared: &Arc<String>) -> bool {
        self.0 == shared.as_str()
    }
}

impl Interner<String> {
    /// The shared copy of `text`.
    pub(super) fn text(&mut self, text: &str) -> Arc<String> {
        self.intern_with(&Text(text), |text| Arc::new(text.0.to_owned()))
    }
}

impl Interner<str> {
    /// The shared copy of `text`.
    pub(super) fn name(&mut self, text: &str) -> Arc<str> {
        self.intern_with(text, |text: &str| Arc::from(text))
    }
}

impl<T: Clone + Hash + Eq> Interner<[T]> {
    /// The shared copy of `items`.
    pub(super) fn slice(&mut self, items: &[T]) -> Arc<[T]> {
        self.intern_with(items, |items: &[T]| Arc::from(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let mut names = Interner::<str>::default();
        let (a, b) = (names.name("ml"), names.name("ml"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(names.len(), 1);
        let other = names.name("web");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!((&*a, &*other, names.len()), ("ml", "web", 2));
        let mut nodes = Interner::<String>::default();
        let (a, b) = (nodes.text("node-1"), nodes.text("node-1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((a.as_str(), nodes.len()), ("node-1", 1));
    }

    #[test]
    fn unused_values_are_swept_and_used_ones_kept() {
        let mut names = Interner::<str>::default();
        let kept: Vec<_> = (0..10).map(|i| names.name(&format!("kept-{i}"))).collect();
        for i in 0..MIN_SWEEP - 10 {
            drop(names.name(&format!("gone-{i}")));
        }
        assert_eq!(names.len(), MIN_SWEEP);
        // The next new value sweeps: the ten in use stay, shared.
        let new = names.name("new");
        assert_eq!(names.len(), 11);
        for (i, name) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(name, &names.name(&format!("kept-{i}"))));
        }
        assert!(Arc::ptr_eq(&new, &names.name("new")));
        assert_eq!(names.len(), 11);
    }
}
