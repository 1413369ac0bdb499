//! `seesay bench --stage vision`, the reading part: a photographed page (scikit-image's
//! page.png) in, the median time of OCR per frame out, detection (both passes) and recognition
//! apart.

use anyhow::Result;

use seesay::config::Config;
use seesay::media::image::load_image;
use seesay::stages::read::Reader;
use seesay::store::Store;

/// The middle value (bench.rs has its own; importing it would make a circle of files).
fn middle(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times `runs` readings of the page (after one to warm up); returns the figures for the report.
pub fn run(cfg: &Config, runs: usize) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let page = store.resolve("sample-page")?;
    let img = load_image(&page, cfg.vision.max_side)?;
    let mut reader = Reader::open(&cfg.read, &cfg.tts.onnxruntime, &store)?;
    reader.read(&img)?;
    let (mut detect, mut recognise, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = Vec::new();
    for _ in 0..runs.max(1) {
        let (l, t) = reader.read_timed(&img)?;
        detect.push(t.detect_s * 1000.0);
        recognise.push(t.recognise_s * 1000.0);
        total.push((t.detect_s + t.recognise_s) * 1000.0);
        lines = l;
    }
    let (d, r, all) = (
        middle(&mut detect),
        middle(&mut recognise),
        middle(&mut total),
    );
    let passes = if cfg.read.contrast_pass { 2 } else { 1 };
    eprintln!(
        "read PP-OCRv4              {}x{} page, {} lines: {all:.0} ms per frame (detection {d:.0} ms in {passes} passes, recognition {r:.0} ms)",
        img.width(),
        img.height(),
        lines.len()
    );
    Ok(
        serde_json::json!({"image": "sample-page", "lines": lines.len(), "read_ms": all,
        "detect_ms": d, "recognise_ms": r, "detect_passes": passes}),
    )
}
