//! The results ledger's decoders of untrusted bytes: a leaf (`Entry::decode`,
//! which accepts only canonical encodings), a player's receipt
//! (`Receipt::from_json` then `verify_receipt`) and the proof checkers with
//! arbitrary sizes, indexes and hashes. None may panic; a decoded entry must
//! re-encode to the very bytes it came from (so its leaf hash is the logged
//! one), and an arbitrary receipt must not verify against a key that never
//! signed anything.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rally_ledger::entry::Entry;
use rally_ledger::{LogSigner, Receipt, check_consistency, check_inclusion, verify_receipt};

#[derive(Arbitrary, Debug)]
enum LedgerInput {
    Leaf(Vec<u8>),
    Receipt(String),
    Inclusion { leaf: Vec<u8>, index: u64, size: u64, root: [u8; 32], proof: Vec<[u8; 32]> },
    Consistency { old_size: u64, old_root: [u8; 32], new_size: u64, new_root: [u8; 32], proof: Vec<[u8; 32]> },
}

fuzz_target!(|input: LedgerInput| {
    match input {
        LedgerInput::Leaf(bytes) => {
            if let Ok(entry) = Entry::decode(&bytes) {
                assert_eq!(entry.encode(), bytes, "a decoded leaf must be canonical");
            }
        }
        LedgerInput::Receipt(text) => {
            let signer = LogSigner::from_seed([7; 32], "fuzz.rally.invalid/ledger").expect("a valid origin");
            if let Ok(receipt) = Receipt::from_json(&text) {
                assert!(
                    verify_receipt(&receipt, &signer.verifier_key()).is_err(),
                    "a receipt nobody signed verified"
                );
            }
        }
        LedgerInput::Inclusion { leaf, index, size, root, proof } => {
            let _ = check_inclusion(&leaf, index, size, &root, &proof);
        }
        LedgerInput::Consistency { old_size, old_root, new_size, new_root, proof } => {
            let _ = check_consistency(old_size, &old_root, new_size, &new_root, &proof);
        }
    }
});
