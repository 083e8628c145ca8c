//! The ONNX policy against Python's onnxruntime, and models that must be refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rally_bot::bench::sample_observations;
use rally_bot::onnx::runtime;
use rally_bot::{BotError, OnnxPolicy, Policy};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bot/ has a parent").to_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Fails with what to do when the runtime is missing, rather than skipping.
fn require_runtime() {
    if let Err(err) = runtime() {
        panic!("these tests need ONNX Runtime: {err}");
    }
}

fn python_scores(model: &Path, inputs: &[[f32; 6]]) -> Vec<Vec<f64>> {
    let python = root().join(".venv/bin/python");
    assert!(python.is_file(), "{} is missing: run `make .venv` first", python.display());
    let request = serde_json::json!({ "model": model, "inputs": inputs });
    let mut child = Command::new(&python)
        .arg(root().join("bot/train/reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running the reference script");
    serde_json::to_writer(child.stdin.take().expect("stdin"), &request).expect("writing the request");
    let output = child.wait_with_output().expect("the reference script");
    assert!(output.status.success(), "the reference script failed");
    serde_json::from_slice(&output.stdout).expect("JSON scores")
}

#[test]
fn scores_match_python_onnxruntime() {
    require_runtime();
    let inputs = sample_observations(257, 11);
    let model = root().join("bot/models/pong-v1.onnx");
    let mut policy = OnnxPolicy::from_file(&model).unwrap();
    let ours = policy.scores(&inputs).unwrap();
    let theirs = python_scores(&model, &inputs);
    assert_eq!(theirs.len(), inputs.len());
    for (row, reference) in ours.chunks_exact(3).zip(&theirs) {
        for (a, b) in row.iter().zip(reference) {
            let tolerance = 1e-4 * (1.0 + b.abs());
            assert!((f64::from(*a) - b).abs() <= tolerance, "{row:?} vs {reference:?}");
        }
    }
    // The built-in model is the committed file, and batched decisions equal single ones.
    let mut builtin = OnnxPolicy::builtin().unwrap();
    assert_eq!(builtin.scores(&inputs).unwrap(), ours);
    let mut batched = Vec::new();
    builtin.decide(&inputs, &mut batched).unwrap();
    let mut single = Vec::new();
    for (obs, expected) in inputs.iter().zip(&batched) {
        builtin.decide(std::slice::from_ref(obs), &mut single).unwrap();
        assert_eq!(single, vec![*expected]);
    }
    builtin.decide(&[], &mut single).unwrap();
    assert!(single.is_empty());
}

fn refusal(name: &str) -> String {
    match OnnxPolicy::from_file(&fixture(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn models_of_another_spec_are_refused_with_the_reason() {
    require_runtime();
    OnnxPolicy::from_file(&fixture("ok.onnx")).expect("the well-formed fixture loads");
    let text = refusal("no_spec.onnx");
    assert!(text.contains("rally.obs_spec") && text.contains("not a rally policy"), "{text}");
    let text = refusal("spec_v2.onnx");
    assert!(text.contains("spec v1") && text.contains("\"2\""), "{text}");
    let text = refusal("wide_input.onnx");
    assert!(text.contains("input shape [-1, 7]"), "{text}");
    let text = refusal("four_actions.onnx");
    assert!(text.contains("output shape [-1, 4]"), "{text}");
}

#[test]
fn unreadable_and_corrupt_models_are_clear_errors() {
    require_runtime();
    let err = OnnxPolicy::from_file(&fixture("does_not_exist.onnx")).unwrap_err();
    assert!(matches!(err, BotError::ModelRead { .. }), "{err}");
    assert!(err.to_string().contains("does_not_exist.onnx"));
    let err = OnnxPolicy::from_file(&fixture("garbage.onnx")).unwrap_err();
    assert!(matches!(err, BotError::ModelInvalid { .. }), "{err}");
    let err = OnnxPolicy::from_bytes(b"", "empty").unwrap_err();
    assert!(matches!(err, BotError::ModelInvalid { .. }), "{err}");
}
