//! Frames and where they come from: a `FrameSource` (a camera, a folder of images, a fake in
//! tests) is asked for a picture every frame interval by `capture`, which puts it into a
//! capacity-1 slot where the newest frame wins: the captioner always looks at the latest picture
//! and older frames are dropped (and counted), never queued.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use image::RgbImage;

use crate::media::image::{load_image, ImageError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CameraError {
    /// The camera could not be opened or set up (at start-up, or when it is opened again).
    #[error("cannot use the camera {device}: {detail}")]
    Open { device: String, detail: String },
    /// The camera was open and stopped giving frames (unplugged, or stalled).
    #[error("the camera {device} stopped giving frames: {detail}")]
    Frames { device: String, detail: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// One picture with where and when it came from.
#[derive(Clone)]
pub struct Frame {
    pub seq: u64,
    pub image: Arc<RgbImage>,
    pub source: String,
    pub at: Instant,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame {{ seq: {}, source: {:?}, {}x{} }}",
            self.seq,
            self.source,
            self.image.width(),
            self.image.height()
        )
    }
}

/// Where pictures come from: a camera, a folder of images, or a fake in tests.
pub trait FrameSource: Send {
    /// Takes a picture now. `Ok(None)`: the source has no more (a folder played out). An error
    /// is the source failing (a camera unplugged); `capture` asks again at the next interval,
    /// and a source that can recover (a camera plugged back in) does so there.
    fn grab(&mut self) -> Result<Option<RgbImage>, CameraError>;
    /// What it is, for logs and frames ("/dev/video0", the file shown last).
    fn name(&self) -> String;
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
        if self.is_closed() {
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

    /// Is the receiving side gone?
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits `d` (in steps of at most 50 ms); false if the receiving side went away meanwhile.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.is_closed() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Takes a picture from `source` every `interval` into the slot (the first one interval from
/// now: the caller has described the first picture itself), until the source has no more or
/// the receiver is gone. A failing source is reported once (with a
/// warning: the conversation goes on without new pictures) and asked again at each interval;
/// when it gives pictures again, that is logged too. Returns the pictures taken.
pub fn capture(source: &mut dyn FrameSource, interval: Duration, tx: &FrameSender) -> u64 {
    let mut seq = 0;
    let mut failing = false;
    loop {
        if !tx.wait(interval) {
            return seq;
        }
        match source.grab() {
            Ok(Some(img)) => {
                if failing {
                    tracing::info!(source = %source.name(), "pictures again");
                    failing = false;
                }
                seq += 1;
                let frame = Frame {
                    seq,
                    image: Arc::new(img),
                    source: source.name(),
                    at: Instant::now(),
                };
                if !tx.put(frame) {
                    return seq;
                }
            }
            Ok(None) => return seq,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    "{e}; the conversation goes on without new pictures (trying again every {:.1} s)",
                    interval.as_secs_f32()
                );
            }
            Err(e) => tracing::debug!("still no pictures: {e}"),
        }
    }
}

/// Image files shown one after another (a folder in name order, or one file). A file that
/// cannot be read is logged and skipped. Its name is the file shown last.
pub struct FolderSource {
    files: std::vec::IntoIter<PathBuf>,
    current: String,
    max_side: u32,
}

impl FolderSource {
    pub fn new(files: Vec<PathBuf>, max_side: u32) -> FolderSource {
        FolderSource {
            files: files.into_iter(),
            current: String::new(),
            max_side,
        }
    }
}

impl FrameSource for FolderSource {
    fn grab(&mut self) -> Result<Option<RgbImage>, CameraError> {
        for f in self.files.by_ref() {
            match load_image(&f, self.max_side) {
                Ok(img) => {
                    self.current = f.display().to_string();
                    return Ok(Some(img));
                }
                Err(e) => tracing::warn!("skipping frame: {e}"),
            }
        }
        Ok(None)
    }
    fn name(&self) -> String {
        self.current.clone()
    }
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

    /// Pictures 1, 2, 3, then an error from the 4th grab on.
    struct Flaky(u64);

    impl FrameSource for Flaky {
        fn grab(&mut self) -> Result<Option<RgbImage>, CameraError> {
            self.0 += 1;
            match self.0 {
                1..=3 => Ok(Some(RgbImage::new(2, 2))),
                _ => Err(CameraError::Frames {
                    device: "fake".into(),
                    detail: "unplugged".into(),
                }),
            }
        }
        fn name(&self) -> String {
            "fake".into()
        }
    }

    #[test]
    fn a_failing_source_is_asked_again_and_stops_with_the_receiver() {
        let (tx, rx) = frame_slot();
        let mut src = Flaky(0);
        let capturing = std::thread::spawn(move || {
            let n = capture(&mut src, Duration::from_millis(5), &tx);
            (n, src.0)
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rx.latest().map(|f| f.seq), Some(3));
        drop(rx);
        let (taken, asked) = capturing.join().unwrap();
        assert_eq!(taken, 3);
        assert!(asked > 5, "asked again after failing: {asked} grabs");
    }

    #[test]
    fn a_folder_skips_unreadable_files_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("b.png");
        RgbImage::new(4, 3).save(&good).unwrap();
        let bad = dir.path().join("a.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let mut src = FolderSource::new(vec![bad, good.clone()], 64);
        assert_eq!(src.grab().unwrap().unwrap().dimensions(), (4, 3));
        assert_eq!(src.name(), good.display().to_string());
        assert!(src.grab().unwrap().is_none());
    }
}
