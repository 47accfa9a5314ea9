//! Compiles the pause program (`pause/pause.rs`) into a static executable
//! for the agent's own sandbox image, with the same rustc and target.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("pause");
    let source = "pause/pause.rs";
    println!("cargo:rerun-if-changed={source}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").unwrap();
    let status = Command::new(rustc)
        .args(["--edition=2021", "--crate-type=bin", "--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args([
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status()
        .expect("run rustc for the pause program");
    assert!(status.success(), "compiling {source} failed");
}
