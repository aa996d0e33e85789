//! The sandbox environment: a Python venv voicegate creates on first use.
//!
//! Location: `VOICEGATE_SANDBOX_DIR` if set, else `$XDG_CACHE_HOME/voicegate/sandbox`,
//! else `~/.cache/voicegate/sandbox` (see [`default_sandbox_dir`]). Inside it, one venv
//! per distinct set of requirements: `venv-<hash>` where the hash covers the pinned SDK
//! requirements (`crates/engine/python/requirements.txt`, embedded in the binary), the
//! agent's `requirements.txt` if it has one, and the interpreter path. Agents without
//! requirements share one venv.
//!
//! Creation runs under an exclusive lock on `venv-<hash>.lock` so that concurrent
//! gateways or test processes create a venv once; a `.voicegate-ready` marker is
//! written last, so an interrupted creation is redone.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::EngineError;

/// The pinned SDK requirements (the one place the primfunctions version lives).
pub const SDK_REQUIREMENTS: &str = include_str!("../python/requirements.txt");
/// The worker runtime, written next to the venv on every start.
pub const RUNTIME_PY: &str = include_str!("../python/voicegate_runtime.py");
/// File name of the runtime inside a venv directory.
pub const RUNTIME_FILE: &str = "voicegate_runtime.py";

/// The default sandbox directory (see the module docs).
pub fn default_sandbox_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOICEGATE_SANDBOX_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("voicegate").join("sandbox")
}

/// The default interpreter used to create venvs: `VOICEGATE_PYTHON` or `python3`.
pub fn default_python() -> String {
    std::env::var("VOICEGATE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// A ready venv: its interpreter and the runtime script.
#[derive(Debug, Clone)]
pub struct SandboxEnv {
    /// The venv directory.
    pub venv: PathBuf,
    /// `venv/bin/python`.
    pub python: PathBuf,
    /// The worker runtime script.
    pub runtime: PathBuf,
}

/// Creates (once) and returns the venv for an agent directory.
///
/// Blocking: call from `spawn_blocking` in async code. `agent_dir` may be `None` for
/// the SDK-only venv.
pub fn ensure_env(
    sandbox_dir: &Path,
    python: &str,
    agent_dir: Option<&Path>,
) -> Result<SandboxEnv, EngineError> {
    let agent_reqs = match agent_dir.map(|d| d.join("requirements.txt")) {
        Some(p) if p.is_file() => Some(fs::read_to_string(&p)?),
        _ => None,
    };
    let mut key = String::new();
    key.push_str(python);
    key.push('\0');
    key.push_str(SDK_REQUIREMENTS);
    key.push('\0');
    key.push_str(agent_reqs.as_deref().unwrap_or(""));
    let name = format!("venv-{:016x}", fnv1a(key.as_bytes()));

    let setup_err = |dir: &Path, message: String| EngineError::SandboxSetup {
        dir: dir.to_owned(),
        message,
    };
    fs::create_dir_all(sandbox_dir).map_err(|e| setup_err(sandbox_dir, e.to_string()))?;
    let venv = sandbox_dir.join(&name);
    let lock = File::create(sandbox_dir.join(format!("{name}.lock")))?;
    lock.lock()?;

    let marker = venv.join(".voicegate-ready");
    if !marker.is_file() {
        if venv.exists() {
            fs::remove_dir_all(&venv).map_err(|e| setup_err(&venv, e.to_string()))?;
        }
        let out = Command::new(python)
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .output()
            .map_err(|source| EngineError::PythonMissing {
                python: python.to_owned(),
                source,
            })?;
        if !out.status.success() {
            return Err(setup_err(
                &venv,
                format!(
                    "`{python} -m venv` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        let sdk_reqs = venv.join("voicegate-requirements.txt");
        fs::write(&sdk_reqs, SDK_REQUIREMENTS)?;
        let mut pip = Command::new(venv.join("bin").join("python"));
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("-r")
        .arg(&sdk_reqs);
        if agent_reqs.is_some() {
            let agent_file = venv.join("agent-requirements.txt");
            fs::write(&agent_file, agent_reqs.as_deref().unwrap_or(""))?;
            pip.arg("-r").arg(&agent_file);
        }
        let out = pip
            .output()
            .map_err(|e| setup_err(&venv, format!("pip could not run: {e}")))?;
        if !out.status.success() {
            return Err(setup_err(
                &venv,
                format!(
                    "pip install failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        fs::write(&marker, name.as_bytes())?;
    }

    let runtime = venv.join(RUNTIME_FILE);
    if fs::read_to_string(&runtime).ok().as_deref() != Some(RUNTIME_PY) {
        // Write-then-rename so a running worker never reads a half-written file.
        let tmp = venv.join(format!("{RUNTIME_FILE}.{}.tmp", std::process::id()));
        fs::write(&tmp, RUNTIME_PY)?;
        fs::rename(&tmp, &runtime)?;
    }
    drop(lock);
    Ok(SandboxEnv {
        python: venv.join("bin").join("python"),
        venv,
        runtime,
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn missing_python_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure_env(dir.path(), "/nonexistent/python3", None).unwrap_err();
        assert!(matches!(err, EngineError::PythonMissing { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/python3"));
    }
}
