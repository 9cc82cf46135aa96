//! Finds and loads the ONNX Runtime shared library (`load-dynamic`) and owns the process-wide
//! ORT environment. Loading explicitly turns a missing library into a startup error instead of
//! the panic `ort` raises when its first call cannot find the library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::ModelError;

/// File name of the library inside the pinned `onnxruntime==1.31.1` wheel.
pub const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
/// Where `make ort` provisions the library, relative to the working directory.
pub const PROVISIONED_DIR: &str = ".ort/lib";

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Picks the library path: `ORT_DYLIB_PATH`, else the configured path, else the provisioned
/// location (working directory, then next to the executable).
pub fn resolve_library_path(configured: Option<&Path>) -> PathBuf {
    if let Some(env_path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(env_path);
    }
    if let Some(path) = configured {
        return path.to_path_buf();
    }
    let in_workdir = Path::new(PROVISIONED_DIR).join(ORT_LIBRARY_FILE);
    if in_workdir.is_file() {
        return in_workdir;
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let beside_exe = exe_dir.join(ORT_LIBRARY_FILE);
        if beside_exe.is_file() {
            return beside_exe;
        }
    }
    in_workdir
}

/// Loads ONNX Runtime once per process and returns the shared environment.
pub fn environment(
    configured: Option<&Path>,
) -> Result<&'static ort::environment::Environment, ModelError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    load_from(resolve_library_path(configured))
}

fn load_from(path: PathBuf) -> Result<&'static ort::environment::Environment, ModelError> {
    if !path.is_file() {
        return Err(ModelError::RuntimeMissing {
            path,
            reason: "no such file".into(),
        });
    }
    let builder = ort::init_from(&path).map_err(|e| ModelError::RuntimeMissing {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let env = builder
        .with_name("edge-gateway")
        .build()
        .map_err(|e| ModelError::RuntimeInit {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(path = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clear_error() {
        let err =
            load_from(PathBuf::from("/nonexistent/libonnxruntime.so")).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/libonnxruntime.so"), "{msg}");
        assert!(msg.contains("make ort"), "{msg}");
    }
}
