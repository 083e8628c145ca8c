//! Swiss pairing of 1,024 entrants (filled in below).
use criterion::{Criterion, criterion_group, criterion_main};

fn swiss(_c: &mut Criterion) {}

criterion_group!(benches, swiss);
criterion_main!(benches);
