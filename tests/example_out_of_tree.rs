//! `examples/custom-backend` is a template to copy: copied out of the repository, with its one
//! dependency pointed at this checkout as its README says, it builds on its own and the library
//! is a plugin the host loads.

use std::path::Path;
use std::process::Command;

use switchyard::Registry;
use switchyard_tests::{dylib_name, test_plugins_target, workspace_root};

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let target = dst.join(path.file_name().unwrap());
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                copy_dir(&path, &target);
            }
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn the_custom_backend_example_builds_out_of_the_tree_and_loads() {
    let root = workspace_root();
    let outside = tempfile::tempdir().unwrap();
    let krate = outside.path().join("my-backend");
    copy_dir(&root.join("examples/custom-backend"), &krate);

    // The step its README documents: point the dependencies on Switchyard's crates (paths into
    // this repository) at a checkout — this one.
    let manifest_path = krate.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    assert!(
        !manifest.contains("workspace = true"),
        "inherits from the workspace:\n{manifest}"
    );
    let checkout = root.display().to_string();
    assert!(!checkout.contains(['"', '\\']), "{checkout}");
    let relative = "path = \"../../";
    assert!(
        manifest.contains(relative),
        "no dependency into the repository:\n{manifest}"
    );
    let manifest = manifest.replace(relative, &format!("path = \"{checkout}/"));
    std::fs::write(&manifest_path, manifest).unwrap();
    // The workspace's lock, so the build resolves the same versions without the network.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    let target = test_plugins_target().with_file_name("out-of-tree-example");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(&krate)
        .args(["build", "--release", "--offline", "--target-dir"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the copied example does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let plugins = tempfile::tempdir().unwrap();
    let lib = dylib_name("custom-backend");
    std::fs::copy(target.join("release").join(&lib), plugins.path().join(&lib)).unwrap();
    let registry = Registry::scan(plugins.path()).unwrap();
    assert!(registry.problems().is_empty(), "{:?}", registry.problems());
    assert_eq!(registry.backend_names(), ["echo"]);
}
