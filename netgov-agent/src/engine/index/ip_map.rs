//! A map keyed by IP address that keeps IPv4 keys in four bytes: an
//! `IpAddr` is 17 bytes, so an entry keyed by it with a 4-byte value takes
//! 24, where an IPv4 key takes 8. Every agent maps every pod's IP, and pod
//! IPs are IPv4 in most clusters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

/// A map from IP addresses to `V`.
#[derive(Clone, Debug)]
pub(super) struct IpMap<V> {
    v4: HashMap<u32, V>,
    v6: HashMap<Ipv6Addr, V>,
}

impl<V> Default for IpMap<V> {
    fn default() -> Self {
        Self {
            v4: HashMap::new(),
            v6: HashMap::new(),
        }
    }
}

impl<V> IpMap<V> {
    pub(super) fn get(&self, ip: &IpAddr) -> Option<&V> {
        match ip {
            IpAddr::V4(ip) => self.v4.get(&u32::from(*ip)),
            IpAddr::V6(ip) => self.v6.get(ip),
        }
    }

    pub(super) fn insert(&mut self, ip: IpAddr, value: V) -> Option<V> {
        match ip {
            IpAddr::V4(ip) => self.v4.insert(u32::from(ip), value),
            IpAddr::V6(ip) => self.v6.insert(ip, value),
        }
    }

    pub(super) fn remove(&mut self, ip: &IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(ip) => self.v4.remove(&u32::from(*ip)),
            IpAddr::V6(ip) => self.v6.remove(ip),
        }
    }

    /// Every address, IPv4 first.
    pub(super) fn keys(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.v4.keys().map(|ip| IpAddr::V4(Ipv4Addr::from(*ip)));
        v4.chain(self.v6.keys().map(|ip| IpAddr::V6(*ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_are_kept_apart_and_found() {
        let mut map = IpMap::default();
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let v6: IpAddr = "fd00::1".parse().expect("ip");
        // The IPv4-mapped IPv6 address is another key than the IPv4 one.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(map.insert(v4, 1), None);
        assert_eq!(map.insert(v6, 2), None);
        assert_eq!(map.insert(mapped, 3), None);
        assert_eq!(map.insert(v4, 4), Some(1));
        assert_eq!(
            (map.get(&v4), map.get(&v6), map.get(&mapped)),
            (Some(&4), Some(&2), Some(&3))
        );
        let mut keys: Vec<IpAddr> = map.keys().collect();
        keys.sort();
        assert_eq!(keys, [v4, mapped, v6]);
        assert_eq!(map.remove(&v6), Some(2));
        assert_eq!(map.remove(&v6), None);
        assert_eq!(map.get(&v6), None);
    }
}
