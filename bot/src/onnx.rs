//! ONNX Runtime: finding and loading its shared library, and the ONNX policy.
//!
//! The library is loaded at run time (ort's `load-dynamic`), from the first of:
//! 1. the file `ORT_DYLIB_PATH` names;
//! 2. the project's Python venv, `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`,
//!    where `.venv` is looked for in the current directory and its parents, beside
//!    the executable and its parents, and in the workspace this crate was built in;
//!
//! and if none is found, [`BotError::RuntimeNotFound`] says how to install it
//! (`make .venv`). Nothing here panics on a missing or broken library.
//!
//! [`OnnxPolicy`] checks a model against the observation spec before it plays:
//! metadata `rally.obs_spec` must be [`OBS_SPEC_VERSION`], the one input `f32[batch, 6]`
//! and the first output `f32[batch, 3]`. Decisions of a whole batch are one
//! `Session::run`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::BotError;
use crate::obs::{Action, N_ACTIONS, OBS_DIM, OBS_SPEC_KEY, OBS_SPEC_VERSION, Observation};
use crate::policy::Policy;

/// The environment variable naming the ONNX Runtime library to load.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The model shipped with the crate (`bot/models/pong-v1.onnx`), trained by `bot/train/train.py`.
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../models/pong-v1.onnx");

/// A loaded ONNX Runtime: the library file and the process's one environment.
pub struct Runtime {
    path: PathBuf,
    environment: ort::environment::Environment,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Runtime {
    /// The library file that was loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The directories whose `.venv` may hold ONNX Runtime, nearest first.
pub fn venv_search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mut push_ancestors = |start: &Path| {
        for dir in start.ancestors() {
            if !roots.iter().any(|known: &PathBuf| known == dir) {
                roots.push(dir.to_path_buf());
            }
        }
    };
    if let Ok(cwd) = std::env::current_dir() {
        push_ancestors(&cwd);
    }
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        push_ancestors(dir);
    }
    // The workspace this crate was compiled in (bot/ is one level below its root).
    push_ancestors(Path::new(env!("CARGO_MANIFEST_DIR")));
    roots
}

/// The ONNX Runtime library inside the venv at `venv`, if any.
pub fn library_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| entry.path())
        .collect();
    pythons.sort();
    for python in pythons.iter().rev() {
        let capi = python.join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else { continue };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("libonnxruntime.so"))
            .map(|entry| entry.path())
            .collect();
        found.sort();
        if let Some(path) = found.pop() {
            return Some(path);
        }
    }
    None
}

/// Finds the library: `env_override` (the value of `ORT_DYLIB_PATH`) if given, else
/// the first `.venv` under `roots` that holds one.
pub fn locate_runtime(env_override: Option<OsString>, roots: &[PathBuf]) -> Result<PathBuf, BotError> {
    if let Some(path) = env_override.filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(BotError::RuntimeNotFound {
            searched: format!("{ORT_DYLIB_ENV}={} (no such file)", path.display()),
        });
    }
    for root in roots {
        if let Some(path) = library_in_venv(&root.join(".venv")) {
            return Ok(path);
        }
    }
    let searched = match (roots.first(), roots.len()) {
        (None, _) => format!("{ORT_DYLIB_ENV} unset, no directories"),
        (Some(first), n) => {
            format!("{ORT_DYLIB_ENV} unset; .venv in {} and {} other directories", first.display(), n - 1)
        }
    };
    Err(BotError::RuntimeNotFound { searched })
}

/// Loads ONNX Runtime from `path` (once per process; later calls return the first).
pub fn init_runtime_from(path: &Path) -> Result<&'static Runtime, BotError> {
    let _guard = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let load_error = |message: String| BotError::RuntimeLoad { path: path.to_owned(), message };
    let builder = ort::init_from(path).map_err(|err| load_error(err.to_string()))?;
    let environment = builder.with_name("rally-bot").build().map_err(|err| load_error(err.to_string()))?;
    Ok(RUNTIME.get_or_init(|| Runtime { path: path.to_owned(), environment }))
}

/// The process's ONNX Runtime, loaded on first use from where [`locate_runtime`] finds it.
pub fn runtime() -> Result<&'static Runtime, BotError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let path = locate_runtime(std::env::var_os(ORT_DYLIB_ENV), &venv_search_roots())?;
    init_runtime_from(&path)
}

/// A policy network run by ONNX Runtime on the CPU, one thread, one call per batch.
pub struct OnnxPolicy {
    session: Session,
    model: String,
    name: String,
    input: Vec<f32>,
}

impl std::fmt::Debug for OnnxPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxPolicy").field("model", &self.model).finish_non_exhaustive()
    }
}

impl OnnxPolicy {
    /// The model shipped in the crate.
    pub fn builtin() -> Result<Self, BotError> {
        Self::from_bytes(BUILTIN_MODEL, "built-in pong-v1.onnx")
    }

    /// A model from a file.
    pub fn from_file(path: &Path) -> Result<Self, BotError> {
        let bytes = std::fs::read(path).map_err(|source| BotError::ModelRead { path: path.to_owned(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// A model from its bytes; `label` names it in errors.
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Self, BotError> {
        let runtime = runtime()?;
        let invalid = |message: String| BotError::ModelInvalid { model: label.to_owned(), message };
        // ort's builder errors carry the builder and are not Send: keep only their text.
        let session = Session::builder(&runtime.environment)
            .map_err(|err| invalid(err.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|err| invalid(err.to_string()))?
            .with_intra_threads(1)
            .map_err(|err| invalid(err.to_string()))?
            .with_inter_threads(1)
            .map_err(|err| invalid(err.to_string()))?
            .commit_from_memory(bytes)
            .map_err(|err| invalid(err.to_string()))?;
        check_model(&session, label)?;
        let version = session.metadata().ok().and_then(|meta| meta.custom("rally.model")).unwrap_or_default();
        let name = if version.is_empty() { "onnx".to_owned() } else { format!("onnx:{version}") };
        Ok(Self { session, model: label.to_owned(), name, input: Vec::new() })
    }

    /// The raw scores (`[n, 3]`, row-major) for a batch of observations.
    pub fn scores(&mut self, observations: &[Observation]) -> Result<Vec<f32>, BotError> {
        let mut out = Vec::new();
        self.run(observations, |scores| out.extend_from_slice(scores))?;
        Ok(out)
    }

    fn run(&mut self, observations: &[Observation], mut each: impl FnMut(&[f32])) -> Result<(), BotError> {
        let n = observations.len();
        if n == 0 {
            return Ok(());
        }
        self.input.clear();
        self.input.extend_from_slice(observations.as_flattened());
        let inference = |err: ort::Error| BotError::Inference(err.to_string());
        let tensor = TensorRef::from_array_view(([n, OBS_DIM], self.input.as_slice())).map_err(inference)?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(inference)?;
        let (shape, scores) = outputs[0].try_extract_tensor::<f32>().map_err(inference)?;
        if shape.len() != 2 || shape[0] != n as i64 || shape[1] != N_ACTIONS as i64 || scores.len() != n * N_ACTIONS {
            return Err(BotError::Inference(format!("the model answered shape {shape:?} for a batch of {n}")));
        }
        for row in scores.chunks_exact(N_ACTIONS) {
            each(row);
        }
        Ok(())
    }
}

impl Policy for OnnxPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn decide(&mut self, observations: &[Observation], actions: &mut Vec<Action>) -> Result<(), BotError> {
        actions.clear();
        self.run(observations, |row| actions.push(Action::argmax(row)))
    }
}

/// A tensor type `f32[?, width]` (any batch size, or a fixed one).
fn is_batch_of(dtype: &ValueType, width: usize) -> Result<(), String> {
    match dtype {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => {
            if shape.len() == 2 && shape[1] == width as i64 && (shape[0] == -1 || shape[0] >= 1) {
                Ok(())
            } else {
                Err(format!("shape {:?}, expected [batch, {width}]", &shape[..]))
            }
        }
        other => Err(format!("type {other}, expected a float32 tensor [batch, {width}]")),
    }
}

fn check_model(session: &Session, label: &str) -> Result<(), BotError> {
    let mismatch =
        |problem: String| BotError::ModelMismatch { model: label.to_owned(), expected: OBS_SPEC_VERSION, problem };
    let version = session
        .metadata()
        .map_err(|err| mismatch(format!("unreadable metadata: {err}")))?
        .custom(OBS_SPEC_KEY)
        .ok_or_else(|| mismatch(format!("no {OBS_SPEC_KEY:?} metadata (not a rally policy)")))?;
    if version.trim() != OBS_SPEC_VERSION.to_string() {
        return Err(mismatch(format!("{OBS_SPEC_KEY} is {version:?}")));
    }
    let inputs = session.inputs();
    if inputs.len() != 1 {
        return Err(mismatch(format!("{} inputs, expected 1", inputs.len())));
    }
    is_batch_of(inputs[0].dtype(), OBS_DIM).map_err(|problem| mismatch(format!("input {problem}")))?;
    let output = session.outputs().first().ok_or_else(|| mismatch("no outputs".into()))?;
    is_batch_of(output.dtype(), N_ACTIONS).map_err(|problem| mismatch(format!("output {problem}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let empty = tempfile::tempdir().unwrap();
        let err = locate_runtime(None, &[empty.path().to_owned()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("make .venv") && text.contains(ORT_DYLIB_ENV), "{text}");
        let err = locate_runtime(Some("/nonexistent/libonnxruntime.so".into()), &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"), "{err}");
    }

    #[test]
    fn a_venv_library_is_found() {
        let root = tempfile::tempdir().unwrap();
        let capi = root.path().join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        let found = locate_runtime(None, &[PathBuf::from("/nonexistent"), root.path().to_owned()]).unwrap();
        assert_eq!(found, capi.join("libonnxruntime.so.1.31.1"));
    }
}
