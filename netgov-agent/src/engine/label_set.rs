//! A pod's labels held compactly. Every agent holds the labels of every
//! pod in the cluster: as a map, three labels take a 544-byte tree node
//! and six strings. A [`LabelSet`] is one sorted slice of shared strings
//! (keys such as `app` recur in every set), and pods with the same labels
//! share one set.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::selector::Labels;
use crate::model::Name;

/// Labels as sorted `(key, value)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSet(Box<[(Name, Name)]>);

impl LabelSet {
    /// The set of `labels`, each string taken from `share` (which returns
    /// one shared copy of each).
    pub fn new(labels: &Labels, mut share: impl FnMut(&str) -> Name) -> Self {
        // A map iterates in key order: the pairs come sorted.
        Self(
            labels
                .iter()
                .map(|(key, value)| (share(key), share(value)))
                .collect(),
        )
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Whether the set has `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every `(key, value)`, by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The labels as a map.
    pub fn to_map(&self) -> Labels {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Whether these are exactly `labels`.
    pub fn is(&self, labels: &Labels) -> bool {
        self.0.len() == labels.len()
            && self
                .iter()
                .zip(labels)
                .all(|((k, v), (key, value))| k == key && v == value)
    }
}

/// Hashes labels in key order, as [`LabelSet`] and [`LabelsOf`] both do.
fn hash_pairs<'a, H: Hasher>(
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    state: &mut H,
) {
    state.write_usize(pairs.len());
    for (key, value) in pairs {
        key.hash(state);
        value.hash(state);
    }
}

impl Hash for LabelSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_pairs(self.iter(), state);
    }
}

/// A map of labels looked up as the [`LabelSet`] it would make, so that a
/// pod's labels find their shared set without building one.
pub struct LabelsOf<'a>(pub &'a Labels);

impl Hash for LabelsOf<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_pairs(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())), state);
    }
}

impl hashbrown::Equivalent<Arc<LabelSet>> for LabelsOf<'_> {
    fn equivalent(&self, set: &Arc<LabelSet>) -> bool {
        set.is(self.0)
    }
}

/// What a selector reads labels from: a map (namespaces, nodes) or a
/// pod's [`LabelSet`].
pub trait LabelLookup {
    /// The value of `key`.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelLookup for LabelSet {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl<L: LabelLookup + ?Sized> LabelLookup for Arc<L> {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_set_reads_as_its_map() {
        let map = labels(&[
            ("tier", "web"),
            ("app", "shop"),
            ("pod-template-hash", "5f7"),
        ]);
        let set = LabelSet::new(&map, |s: &str| Name::from(s));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [
                ("app", "shop"),
                ("pod-template-hash", "5f7"),
                ("tier", "web")
            ]
        );
        assert_eq!(
            (
                set.get("app"),
                set.get("tier"),
                set.get("ap"),
                set.get("zzz")
            ),
            (Some("shop"), Some("web"), None, None)
        );
        assert!(set.contains_key("pod-template-hash") && !set.contains_key(""));
        assert_eq!(set.to_map(), map);
        assert!(set.is(&map));
        assert!(!set.is(&labels(&[("app", "shop")])));
        assert!(!set.is(&labels(&[
            ("app", "shop"),
            ("pod-template-hash", "5f7"),
            ("tier", "db")
        ])));
        assert_eq!(
            LabelSet::new(&Labels::new(), |s: &str| Name::from(s))
                .iter()
                .len(),
            0
        );
    }

    #[test]
    fn a_map_finds_its_shared_set() {
        let map = labels(&[("app", "shop"), ("tier", "web")]);
        let set = Arc::new(LabelSet::new(&map, |s: &str| Name::from(s)));
        let hasher = hashbrown::DefaultHashBuilder::default();
        assert_eq!(hasher.hash_one(&set), hasher.hash_one(LabelsOf(&map)));
        let mut sets = hashbrown::HashSet::new();
        sets.insert(Arc::clone(&set));
        assert!(Arc::ptr_eq(sets.get(&LabelsOf(&map)).expect("found"), &set));
        assert!(sets.get(&LabelsOf(&labels(&[("app", "shop")]))).is_none());
    }
}
