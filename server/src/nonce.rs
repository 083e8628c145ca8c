//! One-time use of connect tokens: every nonce is remembered until its token
//! expires, after which the token would be refused as expired anyway.

use std::collections::{BTreeMap, HashSet};

/// Remembers token nonces until their expiry.
#[derive(Debug, Default)]
pub(crate) struct NonceCache {
    seen: HashSet<[u8; 16]>,
    by_expiry: BTreeMap<u64, Vec<[u8; 16]>>,
}

impl NonceCache {
    /// Records `nonce`; returns false if it was already recorded.
    pub(crate) fn insert(&mut self, nonce: [u8; 16], expires_at_ms: u64) -> bool {
        if !self.seen.insert(nonce) {
            return false;
        }
        self.by_expiry.entry(expires_at_ms).or_default().push(nonce);
        true
    }

    /// Forgets nonces whose tokens have expired by `now_ms`.
    pub(crate) fn purge(&mut self, now_ms: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            for nonce in entry.remove() {
                self.seen.remove(&nonce);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_until_expiry() {
        let mut cache = NonceCache::default();
        assert!(cache.insert([1; 16], 100));
        assert!(!cache.insert([1; 16], 100));
        assert!(cache.insert([2; 16], 200));
        cache.purge(99);
        assert_eq!(cache.len(), 2);
        cache.purge(100);
        assert_eq!(cache.len(), 1);
        assert!(cache.insert([1; 16], 300), "forgotten once its token expired");
    }
}
