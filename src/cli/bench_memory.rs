//! `seesay bench --stage memory`: the embedding model's time per sentence (alone and in a batch)
//! and the memory store's search time with 10,000 memories, as medians.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::bench_common::median;
use seesay::config::Config;
use seesay::memory::{Kind, Memory};
use seesay::stages::embed::Embedder;
use seesay::store::Store;

/// Memories in the store that searches are timed against.
const STORE_SIZE: usize = 10_000;

const SUBJECTS: [&str; 10] = [
    "The red mug",
    "My passport",
    "The spare key",
    "A tabby cat",
    "The blue umbrella",
    "Grandma's letter",
    "The phone charger",
    "A stack of books",
    "The bike helmet",
    "The tax forms",
];
const PLACES: [&str; 10] = [
    "is on the kitchen table",
    "sits in the top drawer",
    "was left by the front door",
    "is under the sofa",
    "lies on the desk in the study",
    "is in the car's glove box",
    "hangs on the hook in the hall",
    "is on the windowsill",
    "was put in the attic",
    "is in the backpack",
];

/// Sentence `i` of a varied set (subject, place and a number).
fn sentence(i: usize) -> String {
    format!(
        "{} {} since day {}.",
        SUBJECTS[i % 10],
        PLACES[i / 10 % 10],
        i / 100
    )
}

pub fn run(cfg: &Config, runs: usize) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let t = Instant::now();
    let embedder = Arc::new(Embedder::open(&cfg.embed, &store)?);
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let n = runs.max(1) * 10;
    let texts: Vec<String> = (0..n).map(sentence).collect();
    embedder.embed_one(&texts[0])?;
    let mut one = Vec::new();
    for s in &texts {
        let t = Instant::now();
        embedder.embed_one(s)?;
        one.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).take(32).collect();
    let t = Instant::now();
    embedder.embed(&refs)?;
    let batch_ms = t.elapsed().as_secs_f64() * 1000.0 / refs.len() as f64;
    let embed_ms = median(&mut one);
    eprintln!(
        "embed  {:<20} {embed_ms:.1} ms per sentence alone, {batch_ms:.1} ms in a batch of {} (load {load_ms:.0} ms)",
        embedder.name(),
        refs.len()
    );
    let search = bench_search(cfg, embedder.clone(), runs)?;
    Ok(serde_json::json!({
        "model": embedder.name(), "load_ms": load_ms, "embed_ms_per_sentence": embed_ms,
        "embed_ms_per_sentence_batched": batch_ms, "search": search,
    }))
}

/// Fills a scratch store with `STORE_SIZE` memories (100 real vectors, repeated with new
/// texts) and times searches in it.
fn bench_search(cfg: &Config, embedder: Arc<Embedder>, runs: usize) -> Result<serde_json::Value> {
    let path =
        std::env::temp_dir().join(format!("seesay-bench-memory-{}.sqlite", std::process::id()));
    let mut mcfg = cfg.memory.clone();
    (mcfg.enabled, mcfg.max_items, mcfg.max_age_days) = (true, 0, 0.0);
    let texts: Vec<String> = (0..100).map(sentence).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs)?;
    let result = (|| -> Result<serde_json::Value> {
        let mut m = Memory::open_at(&path, &mcfg, Some(embedder))?;
        let t = Instant::now();
        for i in 0..STORE_SIZE {
            let v = vectors[i % vectors.len()].clone();
            m.add_embedded(Kind::Note, &sentence(i), v, None, i as i64, "bench")?;
        }
        let fill_s = t.elapsed().as_secs_f64();
        let mut fresh = Memory::open_at(&path, &mcfg, None)?;
        let t = Instant::now();
        fresh.search_vector(&vectors[0], 5)?;
        let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
        let (mut scan, mut full) = (Vec::new(), Vec::new());
        for i in 0..runs.max(1) * 4 {
            let t = Instant::now();
            m.search_vector(&vectors[i % vectors.len()], 5)?;
            scan.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            m.search(&format!("where is {}", SUBJECTS[i % 10].to_lowercase()), 5)?;
            full.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (scan, full) = (median(&mut scan), median(&mut full));
        eprintln!(
            "memory {STORE_SIZE} memories: search {full:.1} ms (query embedding included; the scan alone {scan:.1} ms; first search after opening {cold_ms:.0} ms); filled in {fill_s:.1} s"
        );
        Ok(
            serde_json::json!({"memories": STORE_SIZE, "search_ms": full, "scan_ms": scan,
            "first_search_ms": cold_ms, "fill_s": fill_s}),
        )
    })();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    result
}
