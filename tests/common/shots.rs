//! Pages rendered by headless Chromium (installed by `scripts/setup --test`), the share of a
//! reference's words read back in order, and where tests leave files for people to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where tests leave files for people to look at: $SEESAY_TEST_ARTIFACTS, or test-artifacts/.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("SEESAY_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Renders `body` (HTML) on a white page to a PNG of `w` x `h`.
pub fn render(dir: &Path, name: &str, body: &str, w: u32, h: u32) -> PathBuf {
    let page = format!(
        "<!doctype html><html><head><meta charset=utf-8><style>body{{margin:0;background:#fff;\
         font-family:'DejaVu Sans',sans-serif;}}</style></head><body>{body}</body></html>"
    );
    render_document(dir, name, &page, w, h)
}

/// Renders a whole HTML document to a PNG of `w` x `h`.
pub fn render_document(dir: &Path, name: &str, document: &str, w: u32, h: u32) -> PathBuf {
    let html = dir.join(format!("{name}.html"));
    let png = dir.join(format!("{name}.png"));
    std::fs::write(&html, document).unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs (scripts/setup --test installs it)");
    assert!(
        png.is_file(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    png
}

/// Words for comparing: lower case, punctuation around them dropped.
pub fn norm_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The share of `reference`'s words found in `read` in the same order.
pub fn word_accuracy(reference: &str, read: &str) -> f64 {
    let (r, h) = (norm_words(reference), norm_words(read));
    let mut prev = vec![0usize; h.len() + 1];
    for a in &r {
        let mut cur = vec![0usize; h.len() + 1];
        for (j, b) in h.iter().enumerate() {
            cur[j + 1] = if a == b {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}
