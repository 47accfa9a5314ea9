//! The test images (busybox and nginx stand-ins built from Debian packages
//! by `scripts/build-test-images.sh`), and importing them into an
//! agent's containerd.

use std::path::Path;
use std::process::Command;

/// The archives `build` writes.
pub const ARCHIVES: [&str; 2] = ["busybox.tar", "nginx.tar"];

/// Builds the test images into `dir` as docker archives.
pub fn build(dir: &Path) -> Result<(), String> {
    let script = crate::repo_root().join("scripts/build-test-images.sh");
    run(Command::new(script).arg(dir), "build-test-images.sh")
}

/// Imports the archives in `images` into the containerd of the agent at
/// `agent_dir`, through `skiff image import`.
pub fn import(skiff: &Path, agent_dir: &Path, images: &Path) -> Result<(), String> {
    for archive in ARCHIVES {
        run(
            Command::new(skiff)
                .args(["image", "import", "--data-dir"])
                .arg(agent_dir)
                .arg(images.join(archive)),
            &format!("import {archive}"),
        )?;
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
