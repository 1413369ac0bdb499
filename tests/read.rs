//! Reading text (`seesay read`, PP-OCRv4): pages, a sign and a rotated line rendered by headless
//! Chromium (installed by `scripts/setup --test`), a page under a shadow, a real photographed
//! page (scikit-image's page.png), a photo with no text, and bad images. Accuracy is the share
//! of the reference's words read, in order (longest common subsequence of words). And a sign's
//! question, "What does the sign say?", asked of `seesay run` and of the server.

mod common;

use std::path::Path;

use common::server::{python, Server};
use common::shots::{render, word_accuracy};
use common::*;

#[test]
fn the_scorer_counts_words_in_order() {
    assert_eq!(word_accuracy("a b c d", "a b c d"), 1.0);
    assert_eq!(word_accuracy("a b c d", "A, b. x d"), 0.75);
    assert_eq!(word_accuracy("a b c d", "d c b a"), 0.25);
    assert_eq!(word_accuracy("a b", ""), 0.0);
}

fn read(png: &Path) -> String {
    ok(seesay(&["read", png.to_str().unwrap()]))
}

const PAGE: &str =
    "Opening hours of the public library. The reading room is open from nine in the \
morning until six in the evening on weekdays. Books may be borrowed for three weeks and renewed \
twice at the front desk. Please keep your voice down near the study tables and switch your phone \
to silent before you enter the quiet area.";

fn page_html() -> String {
    format!(
        "<div style='padding:30px;width:720px;font-size:20px;line-height:1.5;color:#222'>\
         <h1 style='font-size:32px'>Library notes</h1><p>{PAGE}</p></div>"
    )
}

#[test]
fn a_clean_page_is_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let png = render(dir.path(), "page", &page_html(), 800, 400);
    let out = read(&png);
    let acc = word_accuracy(&format!("Library notes {PAGE}"), &out);
    assert!(acc >= 0.97, "{acc:.3} of the words:\n{out}");
}

#[test]
fn white_text_on_a_coloured_sign_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let body = "<div style='margin:40px;padding:30px 40px;width:520px;background:#0b7a3e;\
                color:#fff;font-weight:bold;text-align:center;border-radius:12px'>\
                <div style='font-size:56px'>EMERGENCY EXIT</div>\
                <div style='font-size:26px;margin-top:12px'>Keep this door clear at all times</div></div>";
    let png = render(dir.path(), "sign", body, 680, 300);
    let out = read(&png);
    let acc = word_accuracy("EMERGENCY EXIT Keep this door clear at all times", &out);
    assert!(acc >= 0.99, "{acc:.3} of the words:\n{out}");
}

#[test]
fn a_page_in_uneven_light_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let png = render(dir.path(), "page", &page_html(), 800, 400);
    // Multiply a shadow into it: dark in the lower right, a soft edge, as from a hand or a lamp.
    let mut img = image::open(&png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    for (x, y, px) in img.enumerate_pixels_mut() {
        let d = (x as f32 / w as f32) * 0.6 + (y as f32 / h as f32) * 0.4;
        let shade = 1.0 - 0.7 * ((d - 0.35) / 0.3).clamp(0.0, 1.0);
        for c in px.0.iter_mut() {
            *c = (*c as f32 * shade) as u8;
        }
    }
    let shaded = dir.path().join("shaded.png");
    img.save(&shaded).unwrap();
    let out = read(&shaded);
    let acc = word_accuracy(&format!("Library notes {PAGE}"), &out);
    assert!(acc >= 0.9, "{acc:.3} of the words:\n{out}");
}

#[test]
fn rotated_and_upside_down_lines_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let body = "<div style='margin:60px 40px;font-size:34px;transform:rotate(-10deg);width:560px'>\
                Fresh bread every morning</div>\
                <div style='margin:40px;font-size:34px;transform:rotate(180deg);width:560px'>\
                Mind the step</div>";
    let png = render(dir.path(), "rotated", body, 680, 320);
    let out = read(&png);
    let acc = word_accuracy("Fresh bread every morning", &out);
    assert!(acc >= 0.99, "{acc:.3} of the words:\n{out}");
    let acc = word_accuracy("Mind the step", &out);
    assert!(acc >= 0.99, "upside down: {acc:.3} of the words:\n{out}");
}

/// A real photograph of a printed page with uneven light (scikit-image's page.png), which
/// PP-OCRv4's own pipeline reads about 64 % of.
#[test]
fn a_photographed_page_is_read() {
    let page = model_path("sample-page");
    let out = read(&page);
    let reference = "Region-based segmentation Let us first determine markers of the coins and \
        the background. These markers are pixels that we can label unambiguously as either \
        object or background. Here, the markers are found at the two extreme parts of the \
        histogram of grey values: >>> markers = np.zeros_like(coins)";
    let acc = word_accuracy(reference, &out);
    assert!(acc >= 0.9, "{acc:.3} of the words:\n{out}");
}

#[test]
fn a_photo_without_text_reads_nothing() {
    let cat = model_path("sample-chelsea");
    let o = seesay(&["read", cat.to_str().unwrap()]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "", "invented text: {out}");
    assert!(err.contains("no text found"), "{err}");
}

#[test]
fn json_has_lines_with_boxes_and_confidences() {
    let dir = tempfile::tempdir().unwrap();
    let body = "<div style='margin:40px;font-size:40px'>Platform 9</div>";
    let png = render(dir.path(), "json", body, 500, 160);
    let out = ok(seesay(&["read", "--json", png.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lines = v[0]["lines"].as_array().unwrap();
    assert_eq!(v[0]["image"], png.to_str().unwrap());
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["text"], "Platform 9");
    let b: Vec<f64> = serde_json::from_value(lines[0]["box"].clone()).unwrap();
    // The text starts 40 px in and is about 40 px tall.
    assert!(
        b[0] > 25.0 && b[0] < 45.0 && b[2] > b[0] + 100.0 && b[3] - b[1] < 80.0,
        "{b:?}"
    );
    let c = lines[0]["confidence"].as_f64().unwrap();
    assert!(c > 0.8 && c <= 1.0, "{c}");
}

#[test]
fn bad_images_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(d("empty.png"), b"").unwrap();
    std::fs::write(d("notes.png"), "just text").unwrap();
    for (file, says) in [
        ("missing.png", "missing.png"),
        ("empty.png", "is empty"),
        ("notes.png", "not an image"),
    ] {
        let o = seesay(&["read", &d(file)]);
        assert!(!o.status.success(), "{file}");
        assert!(stderr(&o).contains(says), "{file}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "", "{file}");
    }
}

const SIGN_QUESTION: &str = r#"
import base64, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key="unused")
uri = "data:image/png;base64," + base64.b64encode(open(sys.argv[2], "rb").read()).decode()
r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
    {"type": "text", "text": "What does the sign say?"}, {"type": "image_url", "image_url": {"url": uri}}]}])
print("ANSWER:", r.choices[0].message.content)
"#;

#[test]
fn what_the_sign_says_is_answered_in_run_and_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let body = "<div style='margin:40px;padding:30px 40px;width:520px;background:#1d4ed8;\
                color:#fff;font-weight:bold;text-align:center;border-radius:12px'>\
                <div style='font-size:52px'>PLATFORM 4</div>\
                <div style='font-size:28px;margin-top:12px'>Trains to Leeds and York</div></div>";
    let sign = render(dir.path(), "sign", body, 680, 300);
    let said = |answer: &str| {
        let w = words(answer);
        ["leeds", "york"].iter().all(|x| w.contains(&x.to_string()))
    };
    // Spoken to `seesay run`, the sign as its camera's picture.
    let (question, _) = questions(dir.path(), &[("What does the sign say?", 3.0)], 15.0);
    let (_, _, turns) = run_file(
        dir.path(),
        &question,
        "",
        &["--image", sign.to_str().unwrap()],
    );
    assert_eq!(turns.len(), 1, "{turns:?}");
    let answer = turns[0]["answer"].as_str().unwrap();
    assert!(said(answer), "{}", turns[0]);
    // Asked with the picture as an image_url part, through the openai package.
    let s = Server::start(&[]);
    let out = python(SIGN_QUESTION, &[&s.url("/v1"), sign.to_str().unwrap()]);
    let answer = out
        .lines()
        .find_map(|l| l.strip_prefix("ANSWER:"))
        .unwrap_or_default();
    assert!(said(answer), "{out}");
}
