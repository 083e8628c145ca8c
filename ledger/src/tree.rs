//! The Merkle tree of the log, kept as the stored hashes of Go's `sumdb/tlog` layout
//! (every complete subtree once), so proofs can be made at any earlier tree size.
//!
//! `tlog_tiles::tlog` does the math: leaf hash SHA-256(0x00 || bytes), interior node
//! SHA-256(0x01 || left || right), roots and RFC 6962 proofs at any size. Proofs are
//! checked with `ct-merkle` ([`check_inclusion`], [`check_consistency`]), a second,
//! independent implementation of RFC 6962.

use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2_011::Sha256;
use tlog_tiles::{Hash, HashReader};

/// The stored hashes of a tree (`tlog_tiles` layout).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tree {
    stored: Vec<Hash>,
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|index| self.stored.get(index))
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Tree {
    /// Number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given its bytes.
    pub(crate) fn push(&mut self, leaf: &[u8]) {
        self.push_hash(tlog_tiles::record_hash(leaf));
    }

    /// Appends a leaf given its leaf hash.
    pub(crate) fn push_hash(&mut self, leaf_hash: Hash) {
        // Reads only hashes already stored (the completed left siblings), so it cannot fail.
        match tlog_tiles::stored_hashes_for_record_hash(self.size, leaf_hash, self) {
            Ok(hashes) => {
                self.stored.extend(hashes);
                self.size += 1;
            }
            Err(_) => unreachable!("stored hashes below the new leaf are all present"),
        }
    }

    /// Forgets every leaf from `size` on.
    pub(crate) fn truncate(&mut self, size: u64) {
        if size < self.size {
            let count = usize::try_from(tlog_tiles::stored_hash_count(size)).unwrap_or(usize::MAX);
            self.stored.truncate(count);
            self.size = size;
        }
    }

    /// The root of the tree's first `size` leaves (`size <= self.size()`).
    pub(crate) fn root(&self, size: u64) -> Option<[u8; 32]> {
        if size > self.size {
            return None;
        }
        tlog_tiles::tree_hash(size, self).ok().map(|hash| hash.0)
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub(crate) fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<[u8; 32]>> {
        if index >= size || size > self.size {
            return None;
        }
        tlog_tiles::prove_record(size, index, self).ok().map(|proof| proof.into_iter().map(|hash| hash.0).collect())
    }

    /// The consistency proof from the tree of `old` leaves to the tree of `new`.
    pub(crate) fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<[u8; 32]>> {
        if old == 0 || old > new || new > self.size {
            return None;
        }
        tlog_tiles::prove_tree(new, old, self).ok().map(|proof| proof.into_iter().map(|hash| hash.0).collect())
    }
}

/// The largest tree size a proof is checked for (ct-merkle's index bound).
const MAX_TREE_SIZE: u64 = u64::MAX / 2;

fn root_hash(size: u64, root: &[u8; 32]) -> RootHash<Sha256> {
    RootHash::new((*root).into(), size)
}

/// Checks with `ct-merkle` that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root`.
pub fn check_inclusion(leaf: &[u8], index: u64, size: u64, root: &[u8; 32], proof: &[[u8; 32]]) -> bool {
    // ct-merkle asserts leaf indexes fit its layout; no real tree comes near the bound.
    if index >= size || size > MAX_TREE_SIZE {
        return false;
    }
    let proof = InclusionProof::<Sha256>::from_bytes(proof.concat());
    root_hash(size, root).verify_inclusion(&leaf, index, &proof).is_ok()
}

/// Checks with `ct-merkle` that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`. Equal sizes need an
/// empty proof and equal roots.
pub fn check_consistency(
    old_size: u64,
    old_root: &[u8; 32],
    new_size: u64,
    new_root: &[u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if old_size > new_size || new_size > MAX_TREE_SIZE {
        return false;
    }
    if old_size == 0 {
        // Every tree extends the empty one; RFC 9162 defines no proof for it.
        return proof.is_empty();
    }
    let proof = ConsistencyProof::<Sha256>::try_from_bytes(proof.concat());
    proof.is_ok_and(|proof| {
        root_hash(new_size, new_root).verify_consistency(&root_hash(old_size, old_root), &proof).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use ct_merkle::mem_backed_tree::MemoryBackedTree;

    use super::*;

    fn leaf(i: u64) -> Vec<u8> {
        format!("leaf {i}").into_bytes()
    }

    /// The two implementations agree on every root and every proof at every size up
    /// to 70, and ct-merkle accepts what tlog_tiles proves.
    #[test]
    fn tlog_tiles_proofs_check_with_ct_merkle_at_every_size() {
        let mut tree = Tree::default();
        let mut reference = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        let mut roots = vec![];
        for i in 0..70 {
            tree.push(&leaf(i));
            reference.push(leaf(i));
            let size = i + 1;
            let root = tree.root(size).unwrap();
            assert_eq!(&root[..], reference.root().as_bytes().as_slice(), "root at size {size}");
            roots.push(root);
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                let expected: Vec<u8> = reference.prove_inclusion(index as usize).as_bytes().to_vec();
                assert_eq!(proof.concat(), expected, "inclusion of {index} at {size}");
            }
            if size > 1 {
                let proof = tree.consistency_proof(size - 1, size).unwrap();
                assert_eq!(
                    proof.concat(),
                    reference.prove_consistency(1).as_bytes(),
                    "consistency {} -> {size}",
                    size - 1
                );
            }
        }
        // Historical sizes: every pair, every leaf.
        for new in 1..=70u64 {
            let new_root = roots[new as usize - 1];
            for old in 1..=new {
                let proof = tree.consistency_proof(old, new).unwrap();
                assert!(check_consistency(old, &roots[old as usize - 1], new, &new_root, &proof), "{old} -> {new}");
                assert!(!check_consistency(new, &new_root, old, &roots[old as usize - 1], &proof) || old == new);
                assert!(!check_consistency(old, &roots[old as usize - 1], u64::MAX, &new_root, &proof));
                if old < new {
                    assert!(
                        !check_consistency(old, &roots[old as usize], new, &new_root, &proof),
                        "wrong old root {old}"
                    );
                }
            }
            for index in 0..new {
                let proof = tree.inclusion_proof(index, new).unwrap();
                assert!(check_inclusion(&leaf(index), index, new, &new_root, &proof));
                assert!(!check_inclusion(&leaf(index + 1), index, new, &new_root, &proof));
                assert!(!check_inclusion(&leaf(index), index, u64::MAX, &new_root, &proof));
                assert!(!check_inclusion(&leaf(index), u64::MAX - 1, u64::MAX, &new_root, &proof));
            }
        }
    }

    #[test]
    fn truncate_returns_to_the_earlier_tree() {
        let mut tree = Tree::default();
        for i in 0..37 {
            tree.push(&leaf(i));
        }
        let root_20 = tree.root(20).unwrap();
        tree.truncate(20);
        assert_eq!(tree.size(), 20);
        assert_eq!(tree.root(20).unwrap(), root_20);
        tree.push(&leaf(20));
        let mut fresh = Tree::default();
        for i in 0..21 {
            fresh.push(&leaf(i));
        }
        assert_eq!(tree.root(21), fresh.root(21));
        assert_eq!(tree.root(22), None);
        assert_eq!(tree.inclusion_proof(21, 21), None);
        assert_eq!(tree.consistency_proof(0, 21), None);
    }
}
