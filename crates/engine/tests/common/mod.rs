//! Shared test helpers: the sandbox venv (created once per machine) and paths.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use voicegate_engine::sandbox::{SandboxEnv, default_python, default_sandbox_dir, ensure_env};

/// The SDK-only sandbox venv at the default shared location; panics with a clear
/// message (never skips) when Python is missing or the venv cannot be created.
pub fn sdk_env() -> SandboxEnv {
    static ENV: OnceLock<SandboxEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let python = default_python();
        match ensure_env(&default_sandbox_dir(), &python, None) {
            Ok(env) => env,
            Err(e) => panic!(
                "these tests need Python 3 with venv and pip (and PyPI access on first run \
                 to install primfunctions): {e}"
            ),
        }
    })
    .clone()
}

/// crates/engine/tests/<rel>.
pub fn test_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

/// The repository's config/agents/<name>.
pub fn example_agent(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/agents")
        .join(name)
}
