//! Recognition maths (PP-OCRv4's CTC recogniser and the angle classifier, no model inside): a
//! text box in, its straightened crop and the models' input tensors out; the recogniser's
//! per-frame probabilities in, the line's text out, with the spaces the model drops put back
//! from the gaps between its characters.

use image::RgbImage;
use imageproc::geometric_transformations::{warp_into_with, Border, Interpolation};

use super::detect::Quad;

/// Height of the recogniser's and the classifier's input.
pub const LINE_H: u32 = 48;
/// Pixels of input per output frame of the recogniser.
pub const FRAME_PX: usize = 8;
/// The narrowest recogniser batch (RapidOCR's `rec_img_shape` width).
pub const MIN_REC_W: usize = 320;
/// The widest recogniser input: longer lines are squeezed (about 60 characters).
pub const MAX_REC_W: usize = 2400;
/// The classifier's input width.
pub const CLS_W: usize = 192;

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// The box's pixels, straightened into an upright rectangle (boxes are rectangles, so an
/// affine map along their sides does it); a box much taller than wide is a vertical line and is
/// turned to lie flat.
pub fn crop(img: &RgbImage, q: &Quad) -> RgbImage {
    let w = dist(q[0], q[1]).max(dist(q[2], q[3])).round().max(1.0);
    let h = dist(q[0], q[3]).max(dist(q[1], q[2])).round().max(1.0);
    let along = [(q[1][0] - q[0][0]) / w, (q[1][1] - q[0][1]) / w];
    let down = [(q[3][0] - q[0][0]) / h, (q[3][1] - q[0][1]) / h];
    let origin = q[0];
    let mut out = RgbImage::new(w as u32, h as u32);
    warp_into_with(
        img,
        move |x, y| {
            (
                origin[0] + x * along[0] + y * down[0],
                origin[1] + x * along[1] + y * down[1],
            )
        },
        Interpolation::Bilinear,
        Border::Replicate,
        &mut out,
    );
    if h / w >= 1.5 {
        out = imageproc::geometric_transformations::rotate270(&out);
    }
    out
}

/// The width a crop takes at the models' line height.
pub fn scaled_width(img: &RgbImage) -> usize {
    ((LINE_H as f32 * img.width() as f32 / img.height().max(1) as f32).ceil() as usize).max(1)
}

/// Writes `imgs`, each resized to the line height (width `min(scaled, width)`), normalised to
/// -1..1 in BGR order and padded with zeros on the right, as one NCHW batch of `width`.
pub fn batch(imgs: &[&RgbImage], width: usize) -> Vec<f32> {
    let h = LINE_H as usize;
    let plane = h * width;
    let mut data = vec![0f32; imgs.len() * 3 * plane];
    for (n, img) in imgs.iter().enumerate() {
        let w = scaled_width(img).min(width);
        let resized = image::imageops::resize(
            *img,
            w as u32,
            LINE_H,
            image::imageops::FilterType::Triangle,
        );
        let base = n * 3 * plane;
        for (x, y, px) in resized.enumerate_pixels() {
            let at = y as usize * width + x as usize;
            for c in 0..3 {
                data[base + (2 - c) * plane + at] = px[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    data
}

/// The recogniser's character list: blank at 0, the model's characters (from its metadata),
/// and a space at the end (as PaddleOCR appends it).
#[derive(Debug, Clone)]
pub struct Charset {
    chars: Vec<String>,
}

impl Charset {
    /// From the model's `character` metadata: one character per line.
    pub fn from_metadata(list: &str) -> Charset {
        let mut chars = vec![String::new()];
        chars.extend(list.lines().map(str::to_string));
        chars.push(" ".into());
        Charset { chars }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.len() <= 2
    }

    fn space(&self) -> usize {
        self.chars.len() - 1
    }
}

/// One character the recogniser emitted: its class, first and last frame, probability.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Emit {
    class: usize,
    first: usize,
    last: usize,
    prob: f32,
}

/// When a gap between two characters is a space the model left out.
#[derive(Debug, Clone, Copy)]
pub struct SpaceRule {
    /// A gap (between character centres, in frames) at least this many times the line's
    /// typical gap is a space.
    pub gap_ratio: f32,
    /// ... and at least this many frames longer than the typical gap.
    pub min_extra: f32,
}

/// Greedy CTC decoding of one line (`frames` x `classes` probabilities, of which the first
/// `valid` frames hold the picture): the text and the mean probability of its characters.
pub fn decode(
    probs: &[f32],
    frames: usize,
    classes: usize,
    valid: usize,
    charset: &Charset,
    rule: &SpaceRule,
) -> (String, f32) {
    let mut emits: Vec<Emit> = Vec::new();
    let mut prev = 0usize;
    for t in 0..frames.min(valid) {
        let row = &probs[t * classes..(t + 1) * classes];
        let (class, prob) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |best, (i, &p)| if p > best.1 { (i, p) } else { best },
            );
        if class != 0 && class < charset.len() {
            match emits.last_mut() {
                Some(e) if class == prev => e.last = t,
                _ => emits.push(Emit {
                    class,
                    first: t,
                    last: t,
                    prob,
                }),
            }
        }
        prev = class;
    }
    if emits.is_empty() {
        return (String::new(), 0.0);
    }
    let confidence = emits.iter().map(|e| e.prob).sum::<f32>() / emits.len() as f32;
    let spaces = missing_spaces(&emits, charset, rule);
    let mut text = String::new();
    for (i, e) in emits.iter().enumerate() {
        if spaces.contains(&i) {
            text.push(' ');
        }
        text.push_str(&charset.chars[e.class]);
    }
    let text = ascii_forms(&text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (text, confidence)
}

/// Full-width forms (which the Chinese-trained recogniser often picks for brackets and
/// punctuation) as their ASCII equivalents: `（` -> `(`.
pub fn ascii_forms(text: &str) -> String {
    text.chars()
        .map(|c| match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            0x3000 => ' ',
            _ => c,
        })
        .collect()
}

fn is_latin(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_graphic() || (c.is_alphabetic() && (c as u32) < 0x2000))
}

/// Indices of the characters that a space should precede: where the gap from the previous
/// character's centre is well above the line's median gap (both sides Latin script, neither a
/// space already).
fn missing_spaces(emits: &[Emit], charset: &Charset, rule: &SpaceRule) -> Vec<usize> {
    let centre = |e: &Emit| (e.first + e.last) as f32 / 2.0;
    let space = charset.space();
    let gaps: Vec<(usize, f32)> = emits
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].class != space && w[1].class != space)
        .filter(|(_, w)| {
            is_latin(&charset.chars[w[0].class]) && is_latin(&charset.chars[w[1].class])
        })
        .map(|(i, w)| (i + 1, centre(&w[1]) - centre(&w[0])))
        .collect();
    if gaps.len() < 3 {
        return Vec::new();
    }
    let mut sorted: Vec<f32> = gaps.iter().map(|g| g.1).collect();
    sorted.sort_by(f32::total_cmp);
    let typical = sorted[sorted.len() / 2];
    let limit = (typical * rule.gap_ratio).max(typical + rule.min_extra);
    gaps.into_iter()
        .filter(|&(_, g)| g >= limit)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames for a line: each entry a class per frame (0: blank).
    fn frames(classes: usize, seq: &[usize]) -> Vec<f32> {
        let mut p = vec![0.0f32; seq.len() * classes];
        for (t, &c) in seq.iter().enumerate() {
            p[t * classes + c] = 0.9;
            if c != 0 {
                p[t * classes] = 0.05;
            }
        }
        p
    }

    #[test]
    fn greedy_decoding_collapses_repeats_and_keeps_doubled_letters() {
        // a b c ... in order; "l l" separated by a blank stays two letters.
        let cs = Charset::from_metadata("h\ne\nl\no");
        assert_eq!(cs.len(), 6);
        let rule = SpaceRule {
            gap_ratio: 1.6,
            min_extra: 1.5,
        };
        let seq = [1, 1, 0, 2, 0, 3, 3, 0, 3, 0, 4, 4];
        let p = frames(cs.len(), &seq);
        let (text, conf) = decode(&p, seq.len(), cs.len(), seq.len(), &cs, &rule);
        assert_eq!(text, "hello");
        assert!((conf - 0.9).abs() < 1e-5);
        // Frames past the picture (padding) are not read.
        let (short, _) = decode(&p, seq.len(), cs.len(), 5, &cs, &rule);
        assert_eq!(short, "he");
    }

    #[test]
    fn a_long_pause_between_characters_is_a_space() {
        let cs = Charset::from_metadata("o\nf\ng\nr\ne\ny");
        let rule = SpaceRule {
            gap_ratio: 1.6,
            min_extra: 1.5,
        };
        // "of" then a gap of 6 frames (typical 2-3), then "grey".
        let seq = [1, 0, 2, 0, 0, 0, 0, 0, 0, 3, 0, 4, 0, 5, 0, 0, 6];
        let p = frames(cs.len(), &seq);
        let (text, _) = decode(&p, seq.len(), cs.len(), seq.len(), &cs, &rule);
        assert_eq!(text, "of grey");
        // A space the model emitted itself is kept, and not doubled.
        let sp = cs.len() - 1;
        let seq = [1, 0, 2, 0, sp, 0, 3, 0, 4, 0, 5, 0, 6];
        let p = frames(cs.len(), &seq);
        let (text, _) = decode(&p, seq.len(), cs.len(), seq.len(), &cs, &rule);
        assert_eq!(text, "of grey");
        // Even spacing: no space invented.
        let seq = [1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6];
        let p = frames(cs.len(), &seq);
        assert_eq!(
            decode(&p, seq.len(), cs.len(), seq.len(), &cs, &rule).0,
            "ofgrey"
        );
    }

    #[test]
    fn full_width_forms_become_ascii() {
        assert_eq!(ascii_forms("zeros_like（coins）！"), "zeros_like(coins)!");
        assert_eq!(ascii_forms("中文"), "中文");
    }

    #[test]
    fn crops_are_straightened_and_vertical_lines_laid_flat() {
        let img = RgbImage::from_fn(100, 100, |x, _| image::Rgb([x as u8 * 2, 0, 0]));
        let c = crop(
            &img,
            &[[10.0, 10.0], [50.0, 10.0], [50.0, 30.0], [10.0, 30.0]],
        );
        assert_eq!(c.dimensions(), (40, 20));
        // Left edge of the crop is the image's x = 10.
        assert!((c.get_pixel(0, 5)[0] as i32 - 20).abs() <= 2);
        let tall = crop(
            &img,
            &[[10.0, 10.0], [20.0, 10.0], [20.0, 60.0], [10.0, 60.0]],
        );
        assert_eq!(tall.dimensions(), (50, 10));
    }

    #[test]
    fn batches_are_padded_to_a_common_width() {
        let a = RgbImage::from_pixel(96, 48, image::Rgb([255, 255, 255]));
        let data = batch(&[&a], 320);
        assert_eq!(data.len(), 3 * 48 * 320);
        assert_eq!(data[0], 1.0);
        assert_eq!(data[95], 1.0);
        assert_eq!(data[96], 0.0);
    }
}
