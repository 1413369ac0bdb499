//! Frame sources: image files, a folder of images, or a V4L2 camera (feature `camera`). Frames
//! go into a capacity-1 slot where the newest frame wins: the captioner always looks at the
//! latest picture and older frames are dropped (and counted), never queued.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use image::RgbImage;

use crate::media::image::load_image;
#[cfg(feature = "camera")]
use crate::media::image::{decode_image, ImageError};

/// One picture with where and when it came from.
#[derive(Clone)]
pub struct Frame {
    pub seq: u64,
    pub image: Arc<RgbImage>,
    pub source: String,
    pub at: Instant,
}

/// The sending end of a newest-wins slot of capacity one.
#[derive(Clone)]
pub struct FrameSender {
    tx: Sender<Frame>,
    /// The sender's own handle on the slot, to take out a frame nobody has read yet.
    drain: Receiver<Frame>,
    dropped: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

/// The receiving end: the newest frame, or nothing. Dropping it stops the sources.
pub struct FrameReceiver {
    rx: Receiver<Frame>,
    closed: Arc<AtomicBool>,
}

impl FrameReceiver {
    /// The channel, for `select!` and blocking receives.
    pub fn channel(&self) -> &Receiver<Frame> {
        &self.rx
    }

    /// The newest frame, if one arrived since the last call.
    pub fn latest(&self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Creates a capacity-1 frame slot.
pub fn frame_slot() -> (FrameSender, FrameReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let closed = Arc::new(AtomicBool::new(false));
    (
        FrameSender {
            tx,
            drain: rx.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
            closed: closed.clone(),
        },
        FrameReceiver { rx, closed },
    )
}

impl FrameSender {
    /// Puts `frame` in the slot, replacing an unread older frame. Never blocks. Returns false
    /// once the receiving side is gone.
    pub fn put(&self, mut frame: Frame) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        loop {
            match self.tx.try_send(frame) {
                Ok(()) => return true,
                Err(TrySendError::Full(f)) => {
                    if self.drain.try_recv().is_ok() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    frame = f;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }

    /// Frames replaced before anyone looked at them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Sends each image file to the slot, one every `interval`, until the files run out (or, with
/// `repeat`, forever) or the receiver is gone. A file that cannot be read is logged and skipped.
pub fn play_files(
    files: &[PathBuf],
    interval: Duration,
    repeat: bool,
    max_side: u32,
    tx: &FrameSender,
) {
    let mut seq = 0;
    loop {
        for f in files {
            match load_image(f, max_side) {
                Ok(img) => {
                    seq += 1;
                    let frame = Frame {
                        seq,
                        image: Arc::new(img),
                        source: f.display().to_string(),
                        at: Instant::now(),
                    };
                    if !tx.put(frame) {
                        return;
                    }
                }
                Err(e) => tracing::warn!("skipping frame: {e}"),
            }
            std::thread::sleep(interval);
        }
        if !repeat {
            return;
        }
    }
}

/// A V4L2 camera (`/dev/videoN`), MJPEG or YUYV, frames sent to the slot until the receiver is
/// gone. Only in builds with the `camera` feature.
#[cfg(feature = "camera")]
pub fn play_camera(index: usize, tx: &FrameSender) -> Result<(), ImageError> {
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    let what = format!("/dev/video{index}");
    let err = |detail: String| ImageError::Image {
        what: what.clone(),
        detail,
    };
    let dev = v4l::Device::new(index).map_err(|e| err(e.to_string()))?;
    let mut fmt = dev.format().map_err(|e| err(e.to_string()))?;
    fmt.fourcc = v4l::FourCC::new(b"MJPG");
    let fmt = dev.set_format(&fmt).map_err(|e| err(e.to_string()))?;
    let mjpeg = &fmt.fourcc.repr == b"MJPG";
    if !mjpeg && &fmt.fourcc.repr != b"YUYV" {
        return Err(err(format!(
            "the camera offers {} frames; seesay reads MJPG or YUYV",
            fmt.fourcc
        )));
    }
    let mut stream = v4l::io::mmap::Stream::with_buffers(&dev, v4l::buffer::Type::VideoCapture, 4)
        .map_err(|e| err(e.to_string()))?;
    let mut seq = 0;
    loop {
        let (buf, meta) = stream.next().map_err(|e| err(e.to_string()))?;
        let data = &buf[..(meta.bytesused as usize).min(buf.len())];
        let img = if mjpeg {
            decode_image(data, &what, 8192)?
        } else {
            yuyv_to_rgb(data, fmt.width, fmt.height)
                .ok_or_else(|| err("short YUYV frame".into()))?
        };
        seq += 1;
        let frame = Frame {
            seq,
            image: Arc::new(img),
            source: what.clone(),
            at: Instant::now(),
        };
        if !tx.put(frame) {
            return Ok(());
        }
    }
}

/// YUYV 4:2:2 (BT.601, limited range) to RGB.
#[cfg_attr(not(feature = "camera"), allow(dead_code))]
fn yuyv_to_rgb(data: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let need = width as usize * height as usize * 2;
    if data.len() < need {
        return None;
    }
    let mut rgb = Vec::with_capacity(need / 2 * 3);
    for px in data[..need].chunks_exact(4) {
        let (y0, u, y1, v) = (
            px[0] as f32,
            px[1] as f32 - 128.0,
            px[2] as f32,
            px[3] as f32 - 128.0,
        );
        for y in [y0, y1] {
            let c = 1.164 * (y - 16.0);
            rgb.push((c + 1.596 * v).clamp(0.0, 255.0) as u8);
            rgb.push((c - 0.392 * u - 0.813 * v).clamp(0.0, 255.0) as u8);
            rgb.push((c + 2.017 * u).clamp(0.0, 255.0) as u8);
        }
    }
    RgbImage::from_raw(width, height, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Frame {
        Frame {
            seq,
            image: Arc::new(RgbImage::new(1, 1)),
            source: "test".into(),
            at: Instant::now(),
        }
    }

    #[test]
    fn the_newest_frame_wins() {
        let (tx, rx) = frame_slot();
        for i in 1..=5 {
            assert!(tx.put(frame(i)));
        }
        assert_eq!(rx.latest().unwrap().seq, 5);
        assert!(rx.latest().is_none());
        assert_eq!(tx.dropped(), 4);
        drop(rx);
        assert!(!tx.put(frame(6)), "a gone receiver stops the source");
    }

    #[test]
    fn yuyv_grey_stays_grey() {
        let img = yuyv_to_rgb(&[126, 128, 126, 128], 2, 1).unwrap();
        let p = img.get_pixel(1, 0);
        assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
    }
}
