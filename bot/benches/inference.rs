//! Decision cost of each policy on one thread: batch 1, 1,000 bots and 1,024.
//!
//! `cargo bench -p rally-bot --bench inference` (needs `make .venv` for ONNX Runtime).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rally_bot::bench::sample_observations;
use rally_bot::{OnnxPolicy, Policy, PredictorPolicy, TrackerPolicy};

fn decide(c: &mut Criterion) {
    let observations = sample_observations(1024, 3);
    let mut policies: Vec<Box<dyn Policy>> = vec![Box::new(TrackerPolicy), Box::new(PredictorPolicy)];
    match OnnxPolicy::builtin() {
        Ok(policy) => policies.push(Box::new(policy)),
        Err(err) => panic!("the ONNX benchmark needs ONNX Runtime: {err}"),
    }
    let mut group = c.benchmark_group("decide");
    let mut actions = Vec::with_capacity(1024);
    for policy in &mut policies {
        for batch in [1usize, 1000, 1024] {
            group.throughput(Throughput::Elements(batch as u64));
            let name = policy.name().to_owned();
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| policy.decide(&observations[..batch], &mut actions).expect("inference"));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
