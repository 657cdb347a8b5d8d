//! Shared helpers for the workspace integration tests: where the built binaries and plugins are,
//! and building the deliberately broken test plugins.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo output directory of the running test (`target/release` or `target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

fn is_release() -> bool {
    profile_dir().file_name().is_some_and(|n| n == "release")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.current_dir(workspace_root());
    c
}

/// Runs `cargo build` for `packages` in the test's profile (a no-op when they are fresh).
pub fn build_packages(packages: &[&str]) {
    let mut c = cargo();
    c.arg("build").arg("--quiet");
    if is_release() {
        c.arg("--release");
    }
    for p in packages {
        c.args(["-p", p]);
    }
    let status = c.status().expect("run cargo");
    assert!(status.success(), "cargo build {packages:?} failed");
}

/// File name of a cdylib called `name` on this platform.
pub fn dylib_name(name: &str) -> String {
    format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    )
}

/// Path of a workspace plugin library, (re)building its package once per test process so a
/// stale library is never tested.
pub fn plugin_library(package: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let path = profile_dir().join(dylib_name(package));
    {
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        if !built.iter().any(|b| b == package) {
            build_packages(&[package]);
            built.push(package.to_owned());
        }
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The `switchyard` binary, (re)built once per test process.
pub fn switchyard_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_packages(&["switchyard-cli"]);
            profile_dir().join(format!("switchyard{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}

/// The target dir of the test-only workspaces under `tests/plugins`, apart from the real
/// plugins so their libraries never land next to them.
pub fn test_plugins_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("test-plugins")
}

/// Builds the broken plugins of `tests/plugins` (their own workspace and target dir) and
/// returns the path of the library of `package`.
pub fn broken_plugin(package: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_test_workspace(&workspace_root().join("tests/plugins/Cargo.toml")));
    test_plugins_target()
        .join("release")
        .join(dylib_name(package))
}

/// Builds the plugins of `tests/plugins/frozen-0.1.0`, built against a frozen copy of contract
/// 0.1.0 (their own workspace), and returns the path of the library of `package`.
pub fn frozen_plugin(package: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_test_workspace(&workspace_root().join("tests/plugins/frozen-0.1.0/Cargo.toml"))
    });
    test_plugins_target()
        .join("release")
        .join(dylib_name(package))
}

/// `cargo build --release` of the workspace at `manifest` into [`test_plugins_target`].
pub fn build_test_workspace(manifest: &Path) {
    let status = cargo()
        .args(["build", "--quiet", "--release", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(test_plugins_target())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {} failed", manifest.display());
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}
