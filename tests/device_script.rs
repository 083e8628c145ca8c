//! `loadtest/device/capacity.sh --dry-run` (issue 19) plans a 16-core machine
//! as BENCHMARKS.md describes it (one shard per core on half the cores, one
//! generator per shard on its own cores of the other half) and scales down
//! safely where there are fewer cores, without building or starting anything.

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/loadtest/device/capacity.sh");

fn dry_run(env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg("--dry-run")
        .envs(env.iter().copied())
        .env("OUT", "target/capacity-plan")
        .output()
        .unwrap_or_else(|err| panic!("running {SCRIPT}: {err}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{SCRIPT} --dry-run failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn sixteen_cores_get_eight_shards_and_eight_generator_cores() {
    let plan = dry_run(&[("CORES", "16")]);
    assert!(
        plan.contains("16 cores, 8 shard process(es), 8 generator core(s), 1 generator process(es) per shard"),
        "{plan}"
    );
    for shard in 0..8 {
        let line = format!("shard {shard}: core {shard}, QUIC 127.0.0.1:{}", 17_000 + shard);
        assert!(plan.contains(&line), "{line} in {plan}");
        assert!(plan.contains(&format!("generator on cores {} (--processes 1)", 8 + shard)), "{plan}");
    }
    assert!(plan.contains("quic: matches per shard") && plan.contains("udp: matches per shard"), "{plan}");
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR")).join("target/capacity-plan").exists(), "a dry run writes nothing");
}

#[test]
fn fewer_shards_give_each_generator_several_cores() {
    let plan = dry_run(&[("CORES", "16"), ("SHARDS", "4")]);
    assert!(plan.contains("4 shard process(es), 12 generator core(s), 3 generator process(es) per shard"), "{plan}");
    assert!(plan.contains("generator on cores 4-6 (--processes 3)"), "{plan}");
    assert!(plan.contains("generator on cores 13-15 (--processes 3)"), "{plan}");
}

#[test]
fn two_cores_or_one_still_make_a_plan() {
    let plan = dry_run(&[("CORES", "2"), ("TRANSPORTS", "udp")]);
    assert!(plan.contains("2 cores, 1 shard process(es), 1 generator core(s)"), "{plan}");
    assert!(plan.contains("shard 0: core 0") && plan.contains("generator on cores 1 (--processes 1)"), "{plan}");
    assert!(!plan.contains("quic:"), "only the transports asked for: {plan}");
    let plan = dry_run(&[("CORES", "1")]);
    assert!(plan.contains("shard 0: core 0") && plan.contains("generator on cores 0 (--processes 1)"), "{plan}");
}
