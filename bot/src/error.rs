//! The errors of the bot crate: each says what went wrong and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong loading a policy or deciding with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// No ONNX Runtime shared library was found where the bot looks for it.
    #[error(
        "ONNX Runtime's shared library was not found (looked in: {searched}). Install it into the project's \
         venv with `make .venv` (or `python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.31.1`), \
         or point ORT_DYLIB_PATH at a libonnxruntime.so of version 1.31 or newer"
    )]
    RuntimeNotFound {
        /// Where the bot looked, for the message.
        searched: String,
    },
    /// A library was found but could not be loaded (wrong file, wrong version).
    #[error("loading ONNX Runtime from {path}: {message}")]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// ONNX Runtime's or the loader's message.
        message: String,
    },
    /// The model file could not be read.
    #[error("reading the model {path}: {source}")]
    ModelRead {
        /// The model file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// ONNX Runtime refused the model bytes (not an ONNX model, or a corrupt one).
    #[error("the model {model} is not a valid ONNX model: {message}")]
    ModelInvalid {
        /// Which model (a path or "built-in").
        model: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The model is valid ONNX but not a policy for this observation spec.
    #[error("the model {model} does not fit observation spec v{expected}: {problem}")]
    ModelMismatch {
        /// Which model.
        model: String,
        /// The spec version this build speaks.
        expected: u32,
        /// What does not match.
        problem: String,
    },
    /// Inference failed at run time.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The view's schema lacks a field the observation needs, or the match shape is unsupported.
    #[error("cannot observe this match: {0}")]
    Schema(String),
}
