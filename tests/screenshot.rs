//! Screenshot to code: `seesay describe --as html` on web pages written here and rendered by
//! headless Chromium. The HTML it writes must hold the page's visible words in order, its
//! headings as headings and its buttons as buttons; rendered again, it must read back as the
//! same page. Both screenshots of each page are left in the test artefacts.

mod common;

use std::path::Path;

use common::shots::{artifacts, render_document, word_accuracy};
use common::*;

struct Page {
    name: &'static str,
    html: &'static str,
    headings: &'static [&'static str],
    buttons: &'static [&'static str],
}

const PAGES: &[Page] = &[
    Page {
        name: "bakery",
        html: "<body style='background:#fffaf0;color:#3b2f2f;font:18px \"DejaVu Sans\";margin:32px'>\
               <h1 style='font-size:36px'>Corner Bakery</h1>\
               <p>Sourdough, rye and seeded loaves baked before sunrise.<br>\
               Fresh croissants until noon, cakes made to order.</p>\
               <div><button style='background:#2f6b3a;color:#fff;border:0;padding:10px 20px;\
               font-size:18px;border-radius:6px'>Order online</button>&nbsp;&nbsp;\
               <button style='background:#fff;color:#2f6b3a;border:2px solid #2f6b3a;\
               padding:10px 20px;font-size:18px;border-radius:6px'>View prices</button></div>\
               <h2 style='font-size:26px'>Opening hours</h2>\
               <p>Monday to Saturday from seven until four.<br>Closed on public holidays.</p></body>",
        headings: &["Corner Bakery", "Opening hours"],
        buttons: &["Order online", "View prices"],
    },
    Page {
        name: "report",
        html: "<body style='background:#111827;color:#e5e7eb;font:16px \"DejaVu Sans\";margin:28px'>\
               <h1 style='font-size:30px;color:#fff'>Weekly energy report</h1>\
               <p>Your home used less power than last week, mostly at night.<br>\
               The heating ran for eleven hours in total.</p>\
               <h2 style='font-size:22px;color:#93c5fd'>Next steps</h2>\
               <p>Lower the hallway thermostat by one degree to save more.</p>\
               <button style='background:#2563eb;color:#fff;border:0;padding:9px 18px;\
               font-size:16px;border-radius:4px'>Download summary</button></body>",
        headings: &["Weekly energy report", "Next steps"],
        buttons: &["Download summary"],
    },
    Page {
        name: "club",
        html: "<body style='background:#f3f4f6;color:#1f2937;font:20px \"DejaVu Sans\";margin:36px'>\
               <h1 style='font-size:40px'>Join the book club</h1>\
               <p>We meet on the first Tuesday of every month<br>to talk about one novel over tea.</p>\
               <h2 style='font-size:28px'>How it works</h2>\
               <p>Pick up the book at the library desk and read it in four weeks.</p>\
               <div><button style='background:#ea580c;color:#fff;border:0;padding:10px 22px;\
               font-size:20px;border-radius:8px'>Sign up</button>&nbsp;&nbsp;\
               <button style='background:#d1d5db;color:#111;border:0;padding:10px 22px;\
               font-size:20px;border-radius:8px'>Ask a question</button></div></body>",
        headings: &["Join the book club", "How it works"],
        buttons: &["Sign up", "Ask a question"],
    },
];

/// The text inside each element whose tag starts with `tag` (`h` finds h1..h6).
fn elements(html: &str, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&format!("<{tag}")) {
        let after = &rest[i + 1 + tag.len()..];
        let named = after.starts_with(|c: char| c == '>' || c == ' ' || c.is_ascii_digit());
        let (Some(open), true) = (after.find('>'), named) else {
            rest = after;
            continue;
        };
        let inner = &after[open + 1..];
        let end = inner.find("</").unwrap_or(inner.len());
        out.push(inner[..end].to_string());
        rest = &inner[end..];
    }
    out
}

/// The words a browser shows: the document's text without its tags, head or styles.
fn visible_text(html: &str) -> String {
    let body = html.split("<body").nth(1).unwrap_or(html);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&nbsp;", " ").replace("&amp;", "&")
}

fn has(found: &[String], want: &str) -> bool {
    found.iter().any(|f| word_accuracy(want, f) >= 1.0)
}

fn check_page(dir: &Path, page: &Page) {
    let original = format!(
        "<!doctype html><html><head><meta charset=utf-8></head>{}</html>",
        page.html
    );
    let shot = render_document(dir, page.name, &original, 900, 560);
    let html = ok(seesay(&[
        "describe",
        "--as",
        "html",
        shot.to_str().unwrap(),
    ]));
    let (want, got) = (visible_text(page.html), visible_text(&html));
    let acc = word_accuracy(&want, &got);
    assert!(
        acc >= 0.8,
        "{}: {acc:.2} of the words in order:\n{html}",
        page.name
    );
    for h in page.headings {
        assert!(
            has(&elements(&html, "h"), h),
            "{}: heading {h:?}:\n{html}",
            page.name
        );
    }
    for b in page.buttons {
        assert!(
            has(&elements(&html, "button"), b),
            "{}: button {b:?}:\n{html}",
            page.name
        );
    }
    // Rendered again, the page written reads back as the page it came from.
    let again = render_document(dir, &format!("{}-again", page.name), &html, 900, 560);
    let back = ok(seesay(&["read", again.to_str().unwrap()]));
    let acc = word_accuracy(&want, &back);
    assert!(
        acc >= 0.8,
        "{}: rendered again, {acc:.2} read back:\n{back}\n{html}",
        page.name
    );
    let keep = artifacts();
    std::fs::copy(&shot, keep.join(format!("screenshot-{}.png", page.name))).unwrap();
    std::fs::copy(
        &again,
        keep.join(format!("screenshot-{}-as-html.png", page.name)),
    )
    .unwrap();
    std::fs::write(keep.join(format!("screenshot-{}.html", page.name)), &html).unwrap();
}

#[test]
fn the_element_finder_finds_headings_and_buttons() {
    let html = "<h1 style='x'>A</h1><p>b</p><h2>C d</h2><header>no</header><button>E</button>";
    assert_eq!(elements(html, "h"), ["A", "C d"]);
    assert_eq!(elements(html, "button"), ["E"]);
    assert_eq!(
        visible_text("<body><p>a&nbsp;b</p><p>c</p></body>")
            .split_whitespace()
            .count(),
        3
    );
}

#[test]
fn three_screenshots_become_pages_with_their_words_headings_and_buttons() {
    let dir = tempfile::tempdir().unwrap();
    for page in PAGES {
        check_page(dir.path(), page);
    }
}

#[test]
fn describe_as_html_takes_one_image_and_a_known_format() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    image::RgbImage::from_pixel(40, 40, image::Rgb([255, 255, 255]))
        .save(&a)
        .unwrap();
    let a = a.to_str().unwrap();
    assert_clear_error(&["describe", "--as", "pdf", a], &[], "use text or html");
    assert_clear_error(&["describe", "--as", "html", a, a], &[], "one image");
    assert_clear_error(&["describe", "--as", "html", a], &[], "no text found");
}
