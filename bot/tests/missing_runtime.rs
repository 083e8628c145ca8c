//! A broken ONNX Runtime library is a clear error, not a panic. Its own test binary:
//! the library is loaded once per process.

use rally_bot::BotError;
use rally_bot::onnx::{init_runtime_from, locate_runtime};

#[test]
fn a_file_that_is_not_the_library_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let err = init_runtime_from(&fake).unwrap_err();
    assert!(matches!(err, BotError::RuntimeLoad { .. }), "{err}");
    assert!(err.to_string().contains("libonnxruntime.so.1.31.1"), "{err}");
    // The venv layout is found, and the same clear error comes back through the search.
    let capi = dir.path().join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
    std::fs::create_dir_all(&capi).unwrap();
    std::fs::rename(&fake, capi.join("libonnxruntime.so.1.31.1")).unwrap();
    let found = locate_runtime(None, &[dir.path().to_owned()]).unwrap();
    assert!(init_runtime_from(&found).is_err());
    let err = locate_runtime(None, &[dir.path().join("elsewhere")]).unwrap_err();
    assert!(err.to_string().contains("make .venv"), "{err}");
}
