//! Has the scene changed? A frame in, a yes or no out: each frame shrinks to a 32x24 grey
//! thumbnail (a box average, so sensor noise averages out), and its mean absolute difference
//! from the thumbnail of the last *described* frame is compared with a threshold. Only a
//! described frame moves the reference, so a slow drift adds up until it counts as a change.

use image::RgbImage;

/// Thumbnail width and height, in cells.
pub const THUMB_W: usize = 32;
pub const THUMB_H: usize = 24;

/// A frame shrunk to 32x24 grey cells (0-255), each the mean of the pixels it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail(Vec<u8>);

impl Thumbnail {
    pub fn of(img: &RgbImage) -> Thumbnail {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut cells = vec![0u8; THUMB_W * THUMB_H];
        if w == 0 || h == 0 {
            return Thumbnail(cells);
        }
        let raw = img.as_raw();
        // Each cell covers at least one pixel, even in an image smaller than the thumbnail.
        let span = |i: usize, n: usize, cells: usize| {
            let a = (i * n / cells).min(n - 1);
            (a, ((i + 1) * n / cells).max(a + 1))
        };
        let cols: Vec<(usize, usize)> = (0..THUMB_W).map(|cx| span(cx, w, THUMB_W)).collect();
        for cy in 0..THUMB_H {
            let (y0, y1) = span(cy, h, THUMB_H);
            // Row by row, so the pixels are read in the order they lie in memory.
            let mut sums = [0u64; THUMB_W];
            for y in y0..y1 {
                let row = &raw[y * w * 3..(y + 1) * w * 3];
                for (sum, &(x0, x1)) in sums.iter_mut().zip(&cols) {
                    for p in row[x0 * 3..x1 * 3].chunks_exact(3) {
                        // BT.601 luma in fixed point (weights sum to 256).
                        *sum += (77 * p[0] as u64 + 150 * p[1] as u64 + 29 * p[2] as u64) >> 8;
                    }
                }
            }
            for (cx, (sum, &(x0, x1))) in sums.iter().zip(&cols).enumerate() {
                let n = ((y1 - y0) * (x1 - x0)) as u64;
                cells[cy * THUMB_W + cx] = (sum / n) as u8;
            }
        }
        Thumbnail(cells)
    }

    /// Mean absolute difference from `other`, 0 (the same) to 1 (black against white).
    pub fn difference(&self, other: &Thumbnail) -> f32 {
        let total: u32 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| a.abs_diff(*b) as u32)
            .sum();
        total as f32 / (self.0.len() as f32 * 255.0)
    }
}

/// The scene-change check: remembers the last described frame's thumbnail.
#[derive(Debug, Clone)]
pub struct SceneChange {
    threshold: f32,
    reference: Option<Thumbnail>,
}

/// What the check made of one frame.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub thumbnail: Thumbnail,
    /// The difference from the last described frame (1 when there is none yet).
    pub difference: f32,
    /// Describe this frame: the scene changed (or there was none yet, or the threshold is 0).
    pub changed: bool,
}

impl SceneChange {
    /// `threshold`: the difference (0-1) above which a frame is a new scene; 0 describes every
    /// frame.
    pub fn new(threshold: f32) -> SceneChange {
        SceneChange {
            threshold,
            reference: None,
        }
    }

    /// Compares `img` with the last described frame. Nothing changes until `described`.
    pub fn check(&self, img: &RgbImage) -> Verdict {
        let thumbnail = Thumbnail::of(img);
        let difference = match &self.reference {
            Some(r) => thumbnail.difference(r),
            None => 1.0,
        };
        let changed =
            self.reference.is_none() || self.threshold <= 0.0 || difference > self.threshold;
        Verdict {
            thumbnail,
            difference,
            changed,
        }
    }

    /// The frame `v` was checked on has been described: it is the new reference.
    pub fn described(&mut self, v: Verdict) {
        self.reference = Some(v.thumbnail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn flat(w: u32, h: u32, v: u8) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb([v, v, v]))
    }

    #[test]
    fn a_thumbnail_averages_its_cells() {
        // Left half black, right half white: the thumbnail's halves too, at any size.
        for (w, h) in [(640, 480), (1280, 720), (33, 25), (7, 5)] {
            let mut img = flat(w, h, 0);
            for y in 0..h {
                for x in w / 2..w {
                    img.put_pixel(x, y, Rgb([255, 255, 255]));
                }
            }
            let t = Thumbnail::of(&img);
            assert_eq!(t.0[0], 0, "{w}x{h}");
            assert_eq!(t.0[THUMB_W - 1], 255, "{w}x{h}");
            let d = t.difference(&Thumbnail::of(&flat(w, h, 0)));
            assert!((d - 0.5).abs() < 0.08, "{w}x{h}: {d}");
        }
        assert_eq!(
            Thumbnail::of(&flat(64, 48, 200)).0,
            vec![200; THUMB_W * THUMB_H]
        );
    }

    #[test]
    fn only_a_changed_scene_is_described_and_only_a_described_frame_moves_the_reference() {
        let mut scene = SceneChange::new(0.03);
        let first = scene.check(&flat(64, 48, 100));
        assert!(first.changed, "the first frame is always new");
        scene.described(first);
        // Noise-sized changes are the same scene.
        let v = scene.check(&flat(64, 48, 103));
        assert!(!v.changed && v.difference < 0.03, "{v:?}");
        // A drift of 3 levels per frame, never described, adds up to a change.
        let mut level = 100;
        let drifted = loop {
            level += 3;
            let v = scene.check(&flat(64, 48, level));
            if v.changed {
                break level;
            }
        };
        assert!((106..=112).contains(&drifted), "{drifted}");
        // Something dark filling a quarter of the view is a new scene.
        let mut img = flat(64, 48, 100);
        for y in 0..24 {
            for x in 0..32 {
                img.put_pixel(x, y, Rgb([10, 10, 10]));
            }
        }
        assert!(scene.check(&img).changed);
    }

    #[test]
    fn a_zero_threshold_describes_every_frame() {
        let mut scene = SceneChange::new(0.0);
        let v = scene.check(&flat(8, 8, 50));
        scene.described(v);
        assert!(scene.check(&flat(8, 8, 50)).changed);
    }
}
