//! Access-token validation, the check every protected RPC (and the matchmaker)
//! runs without a network hop: an EdDSA (Ed25519) signature check, which
//! dominates the cost. Target: ≥ 10,000 validations per second per core, well
//! above any one service's request rate.
//!
//! `cargo bench -p rally-lobby --bench tokens`: criterion's throughput line is
//! validations per second on one thread.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rally_lobby::{AccessSigningKey, AccessSigningKeys, AccessTokenIssuer};

fn validation(c: &mut Criterion) {
    let secret = AccessSigningKeys::from(AccessSigningKey::from_seed([7; 32]));
    let issuer = AccessTokenIssuer::new(secret.clone());
    let verifier = secret.verifier();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let (token, _) = issuer.issue(42, "benchmark_player", now).expect("issuing works");
    assert!(verifier.verify(&token).is_ok(), "the benchmark token must be valid");
    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_valid", |b| b.iter(|| verifier.verify(black_box(&token))));
    let mut forged = token.clone();
    forged.pop();
    forged.push('A');
    group.bench_function("verify_forged", |b| b.iter(|| verifier.verify(black_box(&forged))));
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
