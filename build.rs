//! espeak-ng (built from source by espeak-rs-sys) uses libsonic from the system (Debian's
//! libsonic-dev) when it cannot download its own copy; the link then needs it named. Also
//! records, for `--version`, the git commit the build comes from and the features built in.
use std::process::Command;

fn main() {
    println!("cargo:rustc-link-lib=sonic");
    println!("cargo:rerun-if-changed=build.rs");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SEESAY_GIT_COMMIT={commit}");
    // A new commit (or a checkout) changes HEAD or the branch it points to.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .filter(|f| f != "default")
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".into()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=SEESAY_FEATURES={features}");
}
