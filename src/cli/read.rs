//! `seesay read IMAGE...`: images in, the text in them out, line by line in reading order (or,
//! with `--json`, each line with its box and confidence). Also `seesay describe --as html`: a
//! screenshot's text read and laid out as a web page.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use seesay::config::Config;
use seesay::media::image::{image_files, load_image};
use seesay::stages::caption;
use seesay::stages::read::{html, Reader, TextLine};
use seesay::store::Store;

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Image files or folders of images (PNG, JPEG, WebP, BMP, GIF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// One JSON array: per image {"image", "lines": [{"text", "box": [x0, y0, x1, y1],
    /// "confidence"}]} (or {"image", "error"}).
    #[arg(long)]
    pub json: bool,
    /// Skip the second, contrast-normalised detection pass (faster; misses more in uneven light).
    #[arg(long)]
    pub single_pass: bool,
}

fn line_json(l: &TextLine) -> serde_json::Value {
    serde_json::json!({
        "text": l.text,
        "box": l.bbox.map(|v| v.round()),
        "confidence": (l.confidence * 1000.0).round() / 1000.0,
    })
}

pub fn read(mut cfg: Config, a: ReadArgs) -> Result<()> {
    if a.single_pass {
        cfg.read.contrast_pass = false;
    }
    let mut files = Vec::new();
    for p in &a.images {
        files.extend(image_files(p)?);
    }
    let store = Store::from_config(&cfg.models)?;
    let mut reader = Reader::open(&cfg.read, &cfg.tts.onnxruntime, &store)?;
    let many = files.len() > 1;
    let (mut failed, mut results) = (0, Vec::new());
    for f in &files {
        let name = f.display().to_string();
        let lines = load_image(f, cfg.vision.max_side)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                let (lines, t) = reader.read_timed(&img)?;
                tracing::debug!(image = %name, boxes = t.boxes, detect_ms = t.detect_s * 1e3,
                    recognise_ms = t.recognise_s * 1e3, "read");
                Ok(lines)
            });
        match lines {
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
                results.push(serde_json::json!({"image": name, "error": format!("{e:#}")}));
            }
            Ok(lines) => {
                if lines.is_empty() {
                    eprintln!("{name}: no text found");
                }
                if !a.json {
                    if many && !lines.is_empty() {
                        outln!("==> {name} <==");
                    }
                    for l in &lines {
                        outln!("{}", l.text);
                    }
                }
                let lines: Vec<_> = lines.iter().map(line_json).collect();
                results.push(serde_json::json!({"image": name, "lines": lines}));
            }
        }
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be read", files.len());
    }
    Ok(())
}

/// `seesay describe --as html SCREENSHOT`: the page's text read, laid out as HTML on stdout.
pub fn screenshot_html(cfg: &Config, files: &[PathBuf]) -> Result<()> {
    let [file] = files else {
        bail!("--as html takes one image ({} given)", files.len());
    };
    let store = Store::from_config(&cfg.models)?;
    let img = load_image(file, cfg.vision.max_side)?;
    if matches!(cfg.vision.backend.as_str(), "llama.cpp" | "openai") {
        outln!("{}", model_html(cfg, &store, &img)?);
        return Ok(());
    }
    let mut reader = Reader::open(&cfg.read, &cfg.tts.onnxruntime, &store)?;
    let lines = reader.read(&img)?;
    if lines.is_empty() {
        bail!("{}: no text found to lay out", file.display());
    }
    outln!("{}", html::page_html(&img, &lines));
    Ok(())
}

/// What a vision-language model is asked for a screenshot.
const HTML_PROMPT: &str = "This is a screenshot of a web page. Write one HTML document, with its \
     CSS in a <style> element, that reproduces it: the same text in the same order, headings, \
     paragraphs, buttons, links, cards and navigation as such, the same colours and layout. \
     Answer with the HTML only.";

/// With a vision-language model configured (`vision.backend` llama.cpp or openai), the picture
/// itself goes to it, asked for the page's code; the HTML out of its answer.
fn model_html(cfg: &Config, store: &Store, img: &image::RgbImage) -> Result<String> {
    let mut vision = cfg.vision.clone();
    vision.prompt = HTML_PROMPT.into();
    vision.max_tokens = vision.max_tokens.max(2048);
    let engine = super::chat::llm_for_vision(cfg, store)?;
    let mut model = caption::open(&vision, store, engine.as_ref())?;
    Ok(html_of(&model.caption(img)?))
}

/// The code in a model's answer: what is inside a fenced block (```html ... ```), if there is
/// one, else the answer.
fn html_of(answer: &str) -> String {
    let Some((_, rest)) = answer.split_once("```") else {
        return answer.trim().to_string();
    };
    let body = rest.split_once('\n').map_or("", |(_, b)| b);
    body.split_once("```")
        .map_or(body, |(code, _)| code)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_code_is_taken_out_of_its_fence() {
        let fenced = "Here it is:\n```html\n<h1>Hi</h1>\n```\nDone.";
        assert_eq!(super::html_of(fenced), "<h1>Hi</h1>");
        assert_eq!(super::html_of(" <p>plain</p>\n"), "<p>plain</p>");
        assert_eq!(super::html_of("```\n<p>open"), "<p>open");
    }
}
