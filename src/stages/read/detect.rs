//! Text detection maths (PP-OCRv4's DB detector, no model inside): an RGB image in, the
//! detector's input tensor out; its probability map in, text boxes (four corners each, in the
//! image's pixels) out. Also the contrast-normalised copy for the second pass, and the merge of
//! the two passes' boxes.

use image::{GrayImage, Luma, RgbImage};
use imageproc::point::Point;

/// A text box: four corners, clockwise from the top left (top left, top right, bottom right,
/// bottom left), in pixels of the image read.
pub type Quad = [[f32; 2]; 4];

/// The settings of the DB post-processing (RapidOCR's `config.yaml` defaults in `ReadConfig`).
#[derive(Debug, Clone, Copy)]
pub struct DbParams {
    /// Probability above which a pixel is text.
    pub thresh: f32,
    /// Mean probability inside a box below which the box is dropped.
    pub box_thresh: f32,
    /// How far a box grows: its area times this over its perimeter, on every side.
    pub unclip_ratio: f32,
    /// At most this many regions are looked at.
    pub max_candidates: usize,
}

/// The detector's input: the image resized so its sides are multiples of 32 (the longer one
/// `limit_side` at most; small images are enlarged up to twice), normalised with mean 0.5 and
/// deviation 0.5, channels in BGR order (as PaddleOCR trained it), NCHW. Returns the data and
/// the resized height and width.
pub fn prepare(img: &RgbImage, limit_side: u32) -> (Vec<f32>, usize, usize) {
    let (w, h) = img.dimensions();
    let longest = w.max(h) as f32;
    let ratio = (limit_side as f32 / longest).min(2.0);
    let round32 = |v: u32| ((v as f32 * ratio / 32.0).round() as u32).max(1) * 32;
    let (rw, rh) = (round32(w), round32(h));
    let resized = image::imageops::resize(img, rw, rh, image::imageops::FilterType::Triangle);
    (to_chw_bgr(&resized), rh as usize, rw as usize)
}

/// NCHW data, BGR order, scaled to -1..1.
pub fn to_chw_bgr(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[(2 - c) * w * h + i] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    data
}

/// Boxes from the probability map (`map_h` x `map_w`, values 0..1), scaled to an image of
/// `img_w` x `img_h`; each with its mean probability.
pub fn boxes(
    prob: &[f32],
    map_w: usize,
    map_h: usize,
    img_w: u32,
    img_h: u32,
    p: &DbParams,
) -> Vec<(Quad, f32)> {
    let bitmap = binarise(prob, map_w, map_h, p.thresh);
    let contours = imageproc::contours::find_contours::<i32>(&bitmap);
    let (sx, sy) = (img_w as f32 / map_w as f32, img_h as f32 / map_h as f32);
    let mut out = Vec::new();
    for c in contours
        .iter()
        .filter(|c| c.border_type == imageproc::contours::BorderType::Outer)
        .take(p.max_candidates)
    {
        let Some(quad) = min_area_quad(&c.points) else {
            continue;
        };
        if short_side(&quad) < 3.0 {
            continue;
        }
        let score = mean_in_outline(prob, map_w, map_h, &c.points);
        if score < p.box_thresh {
            continue;
        }
        let grown = unclip(&quad, p.unclip_ratio);
        if short_side(&grown) < 5.0 {
            continue;
        }
        let scaled = grown.map(|[x, y]| {
            [
                (x * sx).clamp(0.0, img_w as f32),
                (y * sy).clamp(0.0, img_h as f32),
            ]
        });
        if side(&scaled, 0, 1) <= 3.0 || side(&scaled, 0, 3) <= 3.0 {
            continue;
        }
        out.push((scaled, score));
    }
    out
}

/// Pixels over `thresh`, dilated by one pixel right and down (RapidOCR's 2x2 dilation), which
/// joins letters split by a thin gap.
fn binarise(prob: &[f32], w: usize, h: usize, thresh: f32) -> GrayImage {
    let on = |x: usize, y: usize| prob[y * w + x] > thresh;
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let hit = on(x, y)
            || (x > 0 && on(x - 1, y))
            || (y > 0 && on(x, y - 1))
            || (x > 0 && y > 0 && on(x - 1, y - 1));
        Luma([if hit { 255 } else { 0 }])
    })
}

/// The smallest rotated rectangle around the points (rotating calipers over the convex hull's
/// edges), corners ordered as in `Quad`.
fn min_area_quad(points: &[Point<i32>]) -> Option<Quad> {
    let hull: Vec<[f32; 2]> = imageproc::geometry::convex_hull(points.to_vec())
        .iter()
        .map(|p| [p.x as f32, p.y as f32])
        .collect();
    if hull.len() < 3 {
        return None;
    }
    let mut best: Option<(f32, Quad)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len < 1e-6 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let v = [-u[1], u[0]];
        let proj = |p: &[f32; 2], d: [f32; 2]| p[0] * d[0] + p[1] * d[1];
        let (mut u0, mut u1, mut v0, mut v1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in &hull {
            (u0, u1) = (u0.min(proj(p, u)), u1.max(proj(p, u)));
            (v0, v1) = (v0.min(proj(p, v)), v1.max(proj(p, v)));
        }
        let area = (u1 - u0) * (v1 - v0);
        if best.is_none_or(|(b, _)| area < b) {
            let at = |s: f32, t: f32| [s * u[0] + t * v[0], s * u[1] + t * v[1]];
            best = Some((area, [at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)]));
        }
    }
    best.map(|(_, q)| order_corners(q))
}

/// Corners ordered top left, top right, bottom right, bottom left: the two leftmost are the
/// left side (the upper of them first), the two rightmost the right side.
pub fn order_corners(mut pts: [[f32; 2]; 4]) -> Quad {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (tl, bl) = if pts[0][1] <= pts[1][1] {
        (pts[0], pts[1])
    } else {
        (pts[1], pts[0])
    };
    let (tr, br) = if pts[2][1] <= pts[3][1] {
        (pts[2], pts[3])
    } else {
        (pts[3], pts[2])
    };
    [tl, tr, br, bl]
}

fn side(q: &Quad, a: usize, b: usize) -> f32 {
    ((q[a][0] - q[b][0]).powi(2) + (q[a][1] - q[b][1]).powi(2)).sqrt()
}

fn short_side(q: &Quad) -> f32 {
    side(q, 0, 1).min(side(q, 0, 3))
}

/// Grows a rectangle by `area * ratio / perimeter` on every side: what DB's polygon offset
/// with round joins comes to once the smallest rectangle around it is taken again.
pub fn unclip(q: &Quad, ratio: f32) -> Quad {
    let (w, h) = (side(q, 0, 1), side(q, 0, 3));
    if w <= 0.0 || h <= 0.0 {
        return *q;
    }
    let d = w * h * ratio / (2.0 * (w + h));
    let u = [(q[1][0] - q[0][0]) / w, (q[1][1] - q[0][1]) / w];
    let v = [(q[3][0] - q[0][0]) / h, (q[3][1] - q[0][1]) / h];
    let shift = |p: [f32; 2], su: f32, sv: f32| {
        [
            p[0] + d * (su * u[0] + sv * v[0]),
            p[1] + d * (su * u[1] + sv * v[1]),
        ]
    };
    order_corners([
        shift(q[0], -1.0, -1.0),
        shift(q[1], 1.0, -1.0),
        shift(q[2], 1.0, 1.0),
        shift(q[3], -1.0, 1.0),
    ])
}

/// Mean probability over the map's pixels inside the region's outline (DB's "slow" score,
/// which a curved line of a bent page passes where its rectangle's mean would not).
fn mean_in_outline(prob: &[f32], w: usize, h: usize, outline: &[Point<i32>]) -> f32 {
    let x0 = outline.iter().map(|p| p.x).min().unwrap_or(0).max(0);
    let y0 = outline.iter().map(|p| p.y).min().unwrap_or(0).max(0);
    let x1 = outline
        .iter()
        .map(|p| p.x)
        .max()
        .unwrap_or(0)
        .min(w as i32 - 1);
    let y1 = outline
        .iter()
        .map(|p| p.y)
        .max()
        .unwrap_or(0)
        .min(h as i32 - 1);
    if x1 < x0 || y1 < y0 {
        return 0.0;
    }
    let mut pts: Vec<Point<i32>> = outline
        .iter()
        .map(|p| Point::new(p.x - x0, p.y - y0))
        .collect();
    pts.dedup();
    while pts.len() > 1 && pts.first() == pts.last() {
        pts.pop();
    }
    let mut mask = GrayImage::new((x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
    if pts.len() >= 3 {
        imageproc::drawing::draw_polygon_mut(&mut mask, &pts, Luma([255]));
    }
    let (mut sum, mut n) = (0f32, 0usize);
    for (x, y, m) in mask.enumerate_pixels() {
        if m[0] > 0 {
            sum += prob[(y as usize + y0 as usize) * w + x as usize + x0 as usize];
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

/// The upright bounding box `[x0, y0, x1, y1]` of a quad.
pub fn bounds(q: &Quad) -> [f32; 4] {
    let xs = q.map(|p| p[0]);
    let ys = q.map(|p| p[1]);
    let min = |v: [f32; 4]| v.into_iter().fold(f32::MAX, f32::min);
    let max = |v: [f32; 4]| v.into_iter().fold(f32::MIN, f32::max);
    [min(xs), min(ys), max(xs), max(ys)]
}

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

fn intersection(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    area(&[
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ])
}

/// Adds to `first` each box of `second` that no box of `first` already covers: one whose
/// overlap with every box there is below `overlap` of the smaller box's area. The second
/// pass then only adds lines the first missed, never a second copy of a line.
pub fn merge(first: Vec<(Quad, f32)>, second: Vec<(Quad, f32)>, overlap: f32) -> Vec<(Quad, f32)> {
    let mut all = first;
    let kept = all.len();
    for (q, s) in second {
        let b = bounds(&q);
        let covered = all[..kept].iter().any(|(o, _)| {
            let ob = bounds(o);
            intersection(&b, &ob) >= overlap * area(&b).min(area(&ob)).max(1.0)
        });
        if !covered {
            all.push((q, s));
        }
    }
    all
}

/// A contrast-normalised grey copy: each pixel's distance from its neighbourhood's mean, in
/// units of the neighbourhood's deviation (radius `radius`), mapped around mid-grey. Uneven
/// light and shadows flatten out; text stays dark on light or light on dark as it was.
pub fn normalise_contrast(img: &RgbImage, radius: u32) -> RgbImage {
    let grey = image::imageops::grayscale(img);
    let (w, h) = grey.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    // Integral images of the values and their squares, one row and column of zeros in front.
    let mut s = vec![0f64; (wu + 1) * (hu + 1)];
    let mut s2 = vec![0f64; (wu + 1) * (hu + 1)];
    for y in 0..hu {
        let (mut row, mut row2) = (0f64, 0f64);
        for x in 0..wu {
            let v = grey.get_pixel(x as u32, y as u32)[0] as f64;
            row += v;
            row2 += v * v;
            let i = (y + 1) * (wu + 1) + x + 1;
            s[i] = s[i - wu - 1] + row;
            s2[i] = s2[i - wu - 1] + row2;
        }
    }
    let r = radius.max(1) as usize;
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let (x0, y0) = (x.saturating_sub(r), y.saturating_sub(r));
        let (x1, y1) = ((x + r + 1).min(wu), (y + r + 1).min(hu));
        let n = ((x1 - x0) * (y1 - y0)) as f64;
        let sum = |t: &[f64]| {
            t[y1 * (wu + 1) + x1] - t[y0 * (wu + 1) + x1] - t[y1 * (wu + 1) + x0]
                + t[y0 * (wu + 1) + x0]
        };
        let mean = sum(&s) / n;
        let sd = (sum(&s2) / n - mean * mean).max(0.0).sqrt();
        let v = grey.get_pixel(x as u32, y as u32)[0] as f64;
        let out = (128.0 + 48.0 * (v - mean) / (sd + 8.0)).clamp(0.0, 255.0) as u8;
        image::Rgb([out; 3])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Quad {
        [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    }

    #[test]
    fn a_bright_bar_in_the_map_becomes_one_grown_box() {
        let (w, h) = (64, 32);
        let mut prob = vec![0.0f32; w * h];
        for y in 10..18 {
            for x in 8..50 {
                prob[y * w + x] = 0.9;
            }
        }
        let p = DbParams {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.5,
            max_candidates: 100,
        };
        // The image is twice the map's size.
        let found = boxes(&prob, w, h, 128, 64, &p);
        assert_eq!(found.len(), 1, "{found:?}");
        let [x0, y0, x1, y1] = bounds(&found[0].0);
        // The bar spans x 16..100, y 20..36 in the image; unclipping grows it on every side.
        assert!(
            x0 < 16.0 && x0 > 4.0 && x1 > 100.0 && x1 < 112.0,
            "{x0} {x1}"
        );
        assert!(y0 < 20.0 && y0 > 8.0 && y1 > 36.0 && y1 < 48.0, "{y0} {y1}");
        // The outline includes the one-pixel dilation around the bar, which lowers the mean.
        assert!(found[0].1 > 0.7, "{}", found[0].1);
        // A faint bar (mean under box_thresh) gives nothing.
        let faint: Vec<f32> = prob.iter().map(|v| v * 0.5).collect();
        assert!(boxes(&faint, w, h, 128, 64, &p).is_empty());
    }

    #[test]
    fn the_smallest_rectangle_follows_a_tilted_line() {
        // A long thin bar tilted by about 3 degrees.
        let pts: Vec<Point<i32>> = (0..200)
            .flat_map(|x| (0..10).map(move |y| Point::new(x, y + x / 20)))
            .collect();
        let q = min_area_quad(&pts).unwrap();
        let (w, h) = (side(&q, 0, 1), side(&q, 0, 3));
        assert!(w > 195.0 && w < 205.0 && h > 8.0 && h < 14.0, "{q:?}");
        assert!(q[0][0] < 2.0 && q[0][1] < 2.0 && q[2][0] > 197.0, "{q:?}");
    }

    #[test]
    fn unclip_grows_by_area_over_perimeter() {
        let q = rect(0.0, 0.0, 40.0, 10.0);
        // 400 * 1.5 / 100 = 6 on every side.
        let g = unclip(&q, 1.5);
        assert_eq!(bounds(&g).map(|v| v.round()), [-6.0, -6.0, 46.0, 16.0]);
    }

    #[test]
    fn corners_are_ordered_clockwise_from_top_left() {
        let q = order_corners([[10.0, 9.0], [0.0, 0.0], [0.0, 9.0], [10.0, 0.0]]);
        assert_eq!(q, rect(0.0, 0.0, 10.0, 9.0));
    }

    #[test]
    fn the_second_pass_adds_only_what_the_first_missed() {
        let first = vec![(rect(0.0, 0.0, 100.0, 20.0), 0.9)];
        let second = vec![
            (rect(2.0, 1.0, 98.0, 21.0), 0.8),  // the same line again
            (rect(0.0, 40.0, 80.0, 60.0), 0.7), // a line the first pass missed
        ];
        let merged = merge(first, second, 0.5);
        assert_eq!(merged.len(), 2);
        assert_eq!(bounds(&merged[1].0), [0.0, 40.0, 80.0, 60.0]);
    }

    #[test]
    fn contrast_normalisation_flattens_a_shadow() {
        // Dark text strokes on a page whose right half is in shadow.
        let img = RgbImage::from_fn(80, 40, |x, y| {
            let light = if x < 40 { 230.0 } else { 90.0 };
            let ink = if y % 10 < 3 { 0.3 } else { 1.0 };
            image::Rgb([(light * ink) as u8; 3])
        });
        let n = normalise_contrast(&img, 6);
        let paper = |x| n.get_pixel(x, 6)[0] as i32;
        let ink = |x| n.get_pixel(x, 1)[0] as i32;
        // The paper is as light in the shadow as in the light, and ink is darker in both.
        assert!(
            (paper(20) - paper(60)).abs() < 20,
            "{} {}",
            paper(20),
            paper(60)
        );
        assert!(ink(20) + 40 < paper(20) && ink(60) + 40 < paper(60));
    }
}
