//! Images: files and bytes in (PNG, JPEG, WebP, BMP, GIF), RGB pixels out, with limits checked
//! before any pixel is decoded; and images back out as JPEG data URIs for remote models.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine;
use image::RgbImage;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("{what}: {detail}")]
    Image { what: String, detail: String },
    #[error("{what} is {width}x{height} pixels; the limit is {limit}x{limit} (vision.max_side)")]
    TooLarge {
        what: String,
        width: u32,
        height: u32,
        limit: u32,
    },
    #[error("cannot encode the image: {0}")]
    Encode(String),
}

/// Largest image file read, in bytes.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and decodes an image file, refusing non-images and oversized images before decoding.
pub fn load_image(path: &Path, max_side: u32) -> Result<RgbImage, ImageError> {
    let what = path.display().to_string();
    let err = |detail: String| ImageError::Image {
        what: what.clone(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("is a folder, not an image".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "is {} MB; images over {} MB are refused",
            meta.len() >> 20,
            MAX_FILE_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    decode_image(&bytes, &what, max_side)
}

/// Decodes image bytes (PNG, JPEG, WebP, BMP, GIF). The header is read first: an image larger
/// than `max_side` is refused without allocating its pixels.
pub fn decode_image(bytes: &[u8], what: &str, max_side: u32) -> Result<RgbImage, ImageError> {
    let err = |detail: String| ImageError::Image {
        what: what.to_string(),
        detail,
    };
    if bytes.is_empty() {
        return Err(err("is empty".into()));
    }
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))
    };
    if reader()?.format().is_none() {
        return Err(err(
            "is not an image seesay can read (PNG, JPEG, WebP, BMP or GIF)".into(),
        ));
    }
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| err(format!("unreadable image header: {e}")))?;
    if width > max_side || height > max_side {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            width,
            height,
            limit: max_side,
        });
    }
    if width == 0 || height == 0 {
        return Err(err("has no pixels".into()));
    }
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    r.limits(limits);
    let img = r.decode().map_err(|e| {
        err(format!(
            "cannot decode the image (truncated or corrupt?): {e}"
        ))
    })?;
    Ok(img.to_rgb8())
}

/// Encodes an image as a `data:image/jpeg;base64,...` URI (quality 85), for remote models.
pub fn jpeg_data_uri(img: &RgbImage) -> Result<String, ImageError> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(img)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&jpeg)
    ))
}

/// The bytes of a `data:...;base64,...` URI (the only image URLs seesay takes: it fetches
/// nothing from the network).
pub fn data_uri_bytes(uri: &str) -> Result<Vec<u8>, String> {
    let Some((_, b64)) = uri
        .strip_prefix("data:")
        .and_then(|u| u.split_once(";base64,"))
    else {
        return Err("the image must be a data: URI (data:image/jpeg;base64,...); seesay fetches nothing from the network".into());
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("bad base64: {e}"))
}

/// The image files a path names: the file itself, or a folder's images in name order.
pub fn image_files(path: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let err = |detail: String| ImageError::Image {
        what: path.display().to_string(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .map(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "png" | "jpg" | "jpeg" | "webp" | "bmp" | "gif"
                    )
                })
                .unwrap_or(false)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err(
            "the folder holds no images (png, jpg, webp, bmp, gif)".into()
        ));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png_and_refuses_bad_images() {
        let ok = decode_image(&png(8, 6), "x.png", 100).unwrap();
        assert_eq!(ok.dimensions(), (8, 6));
        let e = decode_image(b"hello, I am text", "t.txt", 100).unwrap_err();
        assert!(e.to_string().contains("not an image"), "{e}");
        let full = png(64, 64);
        let e = decode_image(&full[..full.len() / 2], "half.png", 100).unwrap_err();
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
        let e = decode_image(&png(120, 10), "wide.png", 100).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::TooLarge {
                    width: 120,
                    height: 10,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn data_uri_is_a_jpeg() {
        let uri = jpeg_data_uri(&RgbImage::new(4, 4)).unwrap();
        let b64 = uri.strip_prefix("data:image/jpeg;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    }

    #[test]
    fn folders_list_their_images_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.png", "a.JPG", "notes.txt"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let files = image_files(dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.JPG", "b.png"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(image_files(empty.path()).is_err());
    }
}
