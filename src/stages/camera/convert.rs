//! A camera's raw frames in, RGB pictures out: YUYV 4:2:2 (converted here) and MJPEG (JPEG
//! frames, many of them without Huffman tables, which MJPEG leaves out as the standard ones).

use image::RgbImage;

use crate::media::image::{decode_image, ImageError};

/// YUYV 4:2:2 (BT.601, limited range) to RGB. `stride`: bytes per row (at least `width * 2`).
/// `None` when `data` is too short for the size.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32, stride: u32) -> Option<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    let stride = (stride as usize).max(w * 2);
    if w % 2 != 0 || h == 0 || data.len() < stride * (h - 1) + w * 2 {
        return None;
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for px in data[row * stride..row * stride + w * 2].chunks_exact(4) {
            let (u, v) = (px[1] as f32 - 128.0, px[3] as f32 - 128.0);
            for y in [px[0], px[2]] {
                let c = 1.164 * (y as f32 - 16.0);
                rgb.push((c + 1.596 * v).round().clamp(0.0, 255.0) as u8);
                rgb.push((c - 0.392 * u - 0.813 * v).round().clamp(0.0, 255.0) as u8);
                rgb.push((c + 2.017 * u).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, rgb)
}

/// An APP0 segment that marks a JPEG as an MJPEG frame ("AVI1"): the decoder then uses the
/// standard Huffman tables the frame leaves out.
const AVI1: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0];

/// Decodes an MJPEG frame, supplying the standard Huffman tables where the frame has none.
pub fn mjpeg_to_rgb(data: &[u8], what: &str, max_side: u32) -> Result<RgbImage, ImageError> {
    if !data.starts_with(&[0xFF, 0xD8]) || has_huffman_tables(data) {
        return decode_image(data, what, max_side);
    }
    let mut whole = Vec::with_capacity(data.len() + AVI1.len());
    whole.extend_from_slice(&data[..2]);
    whole.extend_from_slice(&AVI1);
    whole.extend_from_slice(&data[2..]);
    decode_image(&whole, what, max_side)
}

/// Does a JPEG define Huffman tables (DHT) before its scan? Unknown layouts count as yes (the
/// decoder then judges them).
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return true;
        }
        match jpeg[at + 1] {
            0xC4 => return true,
            0xDA => return false,
            // Fill bytes before a marker.
            0xFF => at += 1,
            _ => at += 2 + u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn close(a: &Rgb<u8>, b: [u8; 3]) -> bool {
        a.0.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2)
    }

    #[test]
    fn yuyv_colours_come_out_right() {
        // Two pixels per 4 bytes: (Y0 U Y1 V). White and black share the neutral chroma; then
        // pure red and blue (BT.601 limited range).
        let data = [235, 128, 16, 128, 81, 90, 81, 240, 41, 240, 41, 110];
        let img = yuyv_to_rgb(&data, 2, 3, 4).unwrap();
        assert!(
            close(img.get_pixel(0, 0), [255, 255, 255]),
            "{:?}",
            img.get_pixel(0, 0)
        );
        assert!(
            close(img.get_pixel(1, 0), [0, 0, 0]),
            "{:?}",
            img.get_pixel(1, 0)
        );
        assert!(
            close(img.get_pixel(0, 1), [255, 0, 0]),
            "{:?}",
            img.get_pixel(0, 1)
        );
        assert!(
            close(img.get_pixel(1, 2), [0, 0, 255]),
            "{:?}",
            img.get_pixel(1, 2)
        );
    }

    #[test]
    fn yuyv_rows_follow_the_stride_and_short_frames_are_refused() {
        // 2x2 with 8 bytes per row: the padding is skipped.
        let data = [16, 128, 16, 128, 9, 9, 9, 9, 235, 128, 235, 128];
        let img = yuyv_to_rgb(&data, 2, 2, 8).unwrap();
        assert!(close(img.get_pixel(1, 0), [0, 0, 0]));
        assert!(close(img.get_pixel(0, 1), [255, 255, 255]));
        assert!(yuyv_to_rgb(&data[..10], 2, 2, 8).is_none());
        assert!(yuyv_to_rgb(&data, 3, 1, 6).is_none(), "odd width");
    }

    /// A JPEG of a colour gradient, as `image` writes it (with the standard Huffman tables).
    fn jpeg() -> (Vec<u8>, RgbImage) {
        let img = RgbImage::from_fn(48, 32, |x, y| Rgb([x as u8 * 5, y as u8 * 7, 128]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        (out, img)
    }

    /// The JPEG without its DHT segments, as MJPEG cameras send frames.
    fn without_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut at = 2;
        while jpeg[at + 1] != 0xDA {
            let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
            if jpeg[at + 1] != 0xC4 {
                out.extend_from_slice(&jpeg[at..at + 2 + len]);
            }
            at += 2 + len;
        }
        out.extend_from_slice(&jpeg[at..]);
        out
    }

    #[test]
    fn mjpeg_frames_decode_with_or_without_huffman_tables() {
        let (full, original) = jpeg();
        let bare = without_tables(&full);
        assert!(has_huffman_tables(&full));
        assert!(
            !has_huffman_tables(&bare),
            "the test frame still has tables"
        );
        assert!(
            decode_image(&bare, "frame", 64).is_err(),
            "a plain decoder needs the tables"
        );
        let a = mjpeg_to_rgb(&full, "frame", 64).unwrap();
        let b = mjpeg_to_rgb(&bare, "frame", 64).unwrap();
        assert_eq!(a, b, "the standard tables are the ones left out");
        let err: u64 = a
            .as_raw()
            .iter()
            .zip(original.as_raw())
            .map(|(x, y)| x.abs_diff(*y) as u64)
            .sum();
        assert!(
            err / (48 * 32 * 3) < 6,
            "mean error {}",
            err / (48 * 32 * 3)
        );
    }

    #[test]
    fn a_broken_mjpeg_frame_is_an_error_naming_the_camera() {
        let (full, _) = jpeg();
        let e = mjpeg_to_rgb(&full[..full.len() / 3], "/dev/video0", 64);
        assert!(e.is_err_and(|e| e.to_string().contains("/dev/video0")));
        assert!(mjpeg_to_rgb(&[], "/dev/video0", 64).is_err());
    }
}
