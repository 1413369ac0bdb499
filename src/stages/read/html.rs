//! A screenshot as a web page: the lines read (in reading order) and the pixels around them in;
//! HTML out. Each line is text, a heading (taller than the page's body text) or a button (a few
//! words on a filled or outlined box of their own); lines of one paragraph (same size, close
//! below each other) and pieces of one row are joined. Layout analysis of what was read, not a
//! model's guess: it keeps every word read, in order, and the page's and buttons' colours.

use image::RgbImage;

use super::TextLine;

/// What a line is on the page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Heading(u8),
    Button,
    Text,
}

/// A line, what it is, and its colours (background where it has its own, text).
#[derive(Debug, Clone)]
pub struct Item {
    pub kind: Kind,
    pub text: String,
    pub bbox: [f32; 4],
    pub fill: Option<[u8; 3]>,
    pub ink: [u8; 3],
}

type Rgb = [u8; 3];

fn dist(a: Rgb, b: Rgb) -> f32 {
    let d: i32 = (0..3).map(|i| (a[i] as i32 - b[i] as i32).abs()).sum();
    d as f32
}

fn px(img: &RgbImage, x: i64, y: i64) -> Option<Rgb> {
    let (w, h) = img.dimensions();
    (x >= 0 && y >= 0 && x < w as i64 && y < h as i64).then(|| img.get_pixel(x as u32, y as u32).0)
}

/// The page's background: the mean of the commonest colour (in steps of 16).
pub fn background(img: &RgbImage) -> Rgb {
    let mut counts = std::collections::HashMap::<Rgb, (u64, [u64; 3])>::new();
    for p in img.pixels().step_by(7) {
        let e = counts.entry(p.0.map(|c| c & 0xf0)).or_default();
        e.0 += 1;
        (0..3).for_each(|i| e.1[i] += p.0[i] as u64);
    }
    counts
        .into_values()
        .max_by_key(|(n, _)| *n)
        .map_or([255; 3], |(n, sum)| sum.map(|s| (s / n) as u8))
}

/// The commonest colour inside a box: what its text is written on.
fn behind(img: &RgbImage, b: [f32; 4]) -> Rgb {
    let x0 = b[0].clamp(0.0, img.width() as f32 - 1.0) as u32;
    let y0 = b[1].clamp(0.0, img.height() as f32 - 1.0) as u32;
    let w = (b[2].max(0.0) as u32)
        .min(img.width())
        .saturating_sub(x0)
        .max(1);
    let h = (b[3].max(0.0) as u32)
        .min(img.height())
        .saturating_sub(y0)
        .max(1);
    background(&image::imageops::crop_imm(img, x0, y0, w, h).to_image())
}

/// How far from the box the colour `fill` reaches along the box's middle row, left and right.
fn fill_width(img: &RgbImage, b: [f32; 4], fill: Rgb) -> f32 {
    let y = ((b[1] + b[3]) / 2.0) as i64;
    let reach = |mut x: i64, dx: i64| {
        while px(img, x, y).is_some_and(|p| dist(p, fill) < 40.0) {
            x += dx;
        }
        x
    };
    (reach(b[2] as i64 + 2, 1) - reach(b[0] as i64 - 2, -1)) as f32
}

/// Whether an outline (a colour other than the page's) closes the box on all four sides
/// within `reach` pixels.
fn outlined(img: &RgbImage, b: [f32; 4], page: Rgb, reach: f32) -> bool {
    let (cx, cy) = (((b[0] + b[2]) / 2.0) as i64, ((b[1] + b[3]) / 2.0) as i64);
    let hit = |x0: i64, y0: i64, dx: i64, dy: i64| {
        (1..=reach as i64)
            .any(|i| px(img, x0 + dx * i, y0 + dy * i).is_some_and(|p| dist(p, page) > 80.0))
    };
    hit(b[0] as i64, cy, -1, 0)
        && hit(b[2] as i64, cy, 1, 0)
        && hit(cx, b[1] as i64, 0, -1)
        && hit(cx, b[3] as i64, 0, 1)
}

/// The colour in the box farthest from its background: the text's.
fn ink(img: &RgbImage, b: [f32; 4], behind: Rgb) -> Rgb {
    let mut best = (0.0, [0u8; 3]);
    for y in (b[1].max(0.0) as u32..b[3].min(img.height() as f32) as u32).step_by(2) {
        for x in (b[0].max(0.0) as u32..b[2].min(img.width() as f32) as u32).step_by(2) {
            let p = img.get_pixel(x, y).0;
            let d = dist(p, behind);
            if d > best.0 {
                best = (d, p);
            }
        }
    }
    best.1
}

/// The height of the page's body text: the median line height, each line counted once per
/// character (a paragraph outweighs a heading).
fn body_height(lines: &[TextLine]) -> f32 {
    let mut hs: Vec<f32> = lines
        .iter()
        .flat_map(|l| std::iter::repeat_n(l.bbox[3] - l.bbox[1], l.text.chars().count()))
        .collect();
    hs.sort_by(f32::total_cmp);
    hs.get(hs.len() / 2).copied().unwrap_or(16.0)
}

/// What each line is, on a page of colour `page`.
pub fn classify(img: &RgbImage, page: Rgb, lines: &[TextLine]) -> Vec<Item> {
    let body = body_height(lines);
    let width = img.width() as f32;
    lines
        .iter()
        .map(|l| {
            let h = l.bbox[3] - l.bbox[1];
            let words = l.text.split_whitespace().count();
            let fill = Some(behind(img, l.bbox)).filter(|c| dist(*c, page) > 60.0);
            let boxed = match fill {
                Some(c) => fill_width(img, l.bbox, c) < width * 0.6,
                None => outlined(img, l.bbox, page, h * 1.2),
            };
            // Boxes are a few pixels taller than their letters: 36 px and 26 px headings over
            // 18 px text measure 1.65 and 1.35 times the text boxes.
            let kind = match h / body {
                _ if boxed && words <= 4 => Kind::Button,
                r if r >= 1.5 => Kind::Heading(1),
                r if r >= 1.2 => Kind::Heading(2),
                _ => Kind::Text,
            };
            Item {
                kind,
                text: l.text.clone(),
                bbox: l.bbox,
                fill,
                ink: ink(img, l.bbox, fill.unwrap_or(page)),
            }
        })
        .collect()
}

/// Joins pieces of one row, and the lines of one paragraph or heading, into blocks.
pub fn blocks(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for it in items {
        if let Some(last) = out.last_mut() {
            let (h, lh) = (it.bbox[3] - it.bbox[1], last.bbox[3] - last.bbox[1]);
            let overlap = it.bbox[3].min(last.bbox[3]) - it.bbox[1].max(last.bbox[1]);
            let same_row = overlap > 0.5 * h.min(lh) && it.bbox[0] - last.bbox[2] < 1.5 * h;
            let below = it.bbox[1] - last.bbox[3] < 0.9 * h && (h - lh).abs() < 0.25 * h;
            if it.kind == last.kind && it.kind != Kind::Button && (same_row || below) {
                last.text = format!("{} {}", last.text, it.text);
                last.bbox = [
                    last.bbox[0].min(it.bbox[0]),
                    last.bbox[1].min(it.bbox[1]),
                    last.bbox[2].max(it.bbox[2]),
                    last.bbox[3].max(it.bbox[3]),
                ];
                continue;
            }
        }
        out.push(it);
    }
    out
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page as HTML: its background, headings, paragraphs and buttons (buttons of one row
/// together), in reading order.
pub fn page_html(img: &RgbImage, lines: &[TextLine]) -> String {
    let page = background(img);
    let blocks = blocks(classify(img, page, lines));
    let title = blocks
        .iter()
        .find(|b| matches!(b.kind, Kind::Heading(_)))
        .map_or("Page".to_string(), |b| escape(&b.text));
    let mut body = String::new();
    let mut in_row = false;
    for b in &blocks {
        let button = b.kind == Kind::Button;
        if button != in_row {
            body.push_str(if button {
                "<div class=\"row\">\n"
            } else {
                "</div>\n"
            });
            in_row = button;
        }
        let text = escape(&b.text);
        let color = format!("color:{}", hex(b.ink));
        body.push_str(&match b.kind {
            Kind::Heading(n) => format!("<h{n} style=\"{color}\">{text}</h{n}>\n"),
            Kind::Button => {
                let fill = b
                    .fill
                    .map_or(String::new(), |f| format!("background:{};", hex(f)));
                format!("  <button style=\"{fill}{color}\">{text}</button>\n")
            }
            Kind::Text => format!("<p style=\"{color}\">{text}</p>\n"),
        });
    }
    if in_row {
        body.push_str("</div>\n");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{background:{};font-family:sans-serif;margin:24px 32px}}\
         .row{{display:flex;gap:12px;margin:12px 0}}\
         button{{font-size:16px;padding:8px 18px;border:1px solid #888;border-radius:6px}}\
         </style></head>\n<body>\n{body}</body></html>\n",
        hex(page)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb as Px;

    fn line(text: &str, bbox: [f32; 4]) -> TextLine {
        TextLine {
            bbox,
            ..TextLine::plain(text)
        }
    }

    #[test]
    fn headings_paragraphs_and_buttons_are_told_apart() {
        // White page; a blue filled box behind the last line.
        let mut img = RgbImage::from_pixel(400, 300, Px([255, 255, 255]));
        for y in 220..270 {
            for x in 40..160 {
                img.put_pixel(x, y, Px([30, 80, 220]));
            }
        }
        let lines = [
            line("Big title", [40.0, 20.0, 300.0, 60.0]),
            line(
                "First line of text that goes on",
                [40.0, 90.0, 360.0, 110.0],
            ),
            line("and the second line of it.", [40.0, 114.0, 330.0, 134.0]),
            line("A new paragraph", [40.0, 170.0, 250.0, 190.0]),
            line("Sign up", [60.0, 235.0, 140.0, 255.0]),
        ];
        let html = page_html(&img, &lines);
        assert!(html.contains(">Big title</h1>"), "{html}");
        assert!(
            html.contains(">First line of text that goes on and the second line of it.</p>"),
            "{html}"
        );
        assert!(html.contains(">A new paragraph</p>"), "{html}");
        assert!(
            html.contains("background:#1e50dc;") && html.contains(">Sign up</button>"),
            "{html}"
        );
        assert!(html.contains("<title>Big title</title>"), "{html}");
    }

    #[test]
    fn text_is_escaped() {
        let img = RgbImage::from_pixel(100, 40, Px([255, 255, 255]));
        let html = page_html(&img, &[line("a < b & c", [2.0, 2.0, 90.0, 20.0])]);
        assert!(html.contains("a &lt; b &amp; c"), "{html}");
    }
}
