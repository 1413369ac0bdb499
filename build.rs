//! espeak-ng (built from source by espeak-rs-sys) uses libsonic from the system (Debian's
//! libsonic-dev) when it cannot download its own copy; the link then needs it named.
fn main() {
    println!("cargo:rustc-link-lib=sonic");
    println!("cargo:rerun-if-changed=build.rs");
}
