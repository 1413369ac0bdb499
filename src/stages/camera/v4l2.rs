//! A V4L2 camera (Linux): a device path in, RGB pictures out. MJPEG is preferred (less USB
//! bandwidth), YUYV taken otherwise; 1280x720 is asked for (the driver picks its nearest size).
//! The device is opened, set up and read once at start-up, so a missing, busy or unusable
//! camera is an error naming it before anything else starts. A camera that fails later is
//! closed and opened again at the next picture.

use std::io;
use std::time::Duration;

use image::RgbImage;
use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::convert::{mjpeg_to_rgb, yuyv_to_rgb};
use super::frames::{CameraError, FrameSource};

/// Driver buffers. Those filled while nobody looked are stale: a picture skips them.
const BUFFERS: u32 = 2;
/// A camera that gives no frame for this long has stalled (and a run stopping waits no longer).
const FRAME_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest frame side decoded.
const MAX_SIDE: u32 = 8192;
/// Corrupt frames in a row before a picture fails.
const TRIES: usize = 3;

/// A V4L2 capture device.
pub struct V4l2Camera {
    device: String,
    live: Option<Live>,
    /// The picture taken when the camera was opened, handed out by the first `grab`.
    first: Option<RgbImage>,
}

/// An open, streaming device.
struct Live {
    // Dropped before the device (the stream stops streaming when dropped).
    stream: Stream<'static>,
    _dev: Device,
    format: Format,
}

impl V4l2Camera {
    /// Opens `device` (a path such as /dev/video0), sets it up and takes a first picture.
    pub fn open(device: &str) -> Result<V4l2Camera, CameraError> {
        let mut live = Live::start(device)?;
        let first = match live.take(device) {
            Ok(img) => img,
            Err(CameraError::Frames { device, detail }) => {
                close(live);
                return Err(CameraError::Open { device, detail });
            }
            Err(e) => {
                close(live);
                return Err(e);
            }
        };
        tracing::info!(
            camera = device,
            format = %live.format.fourcc,
            width = live.format.width,
            height = live.format.height,
            "camera open"
        );
        Ok(V4l2Camera {
            device: device.to_string(),
            live: Some(live),
            first: Some(first),
        })
    }
}

impl FrameSource for V4l2Camera {
    fn grab(&mut self) -> Result<Option<RgbImage>, CameraError> {
        if let Some(img) = self.first.take() {
            return Ok(Some(img));
        }
        let mut live = match self.live.take() {
            Some(live) => live,
            None => Live::start(&self.device)?,
        };
        match live.take(&self.device) {
            Ok(img) => {
                self.live = Some(live);
                Ok(Some(img))
            }
            Err(e) => {
                close(live);
                Err(e)
            }
        }
    }
    fn name(&self) -> String {
        self.device.clone()
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            close(live);
        }
    }
}

/// Closes a device. The v4l crate panics when it cannot stop a stream for any reason but
/// an unplugged device; the conversation must not end for that.
fn close(live: Live) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(live))).is_err() {
        tracing::debug!("the camera's stream did not stop cleanly");
    }
}

impl Live {
    fn start(device: &str) -> Result<Live, CameraError> {
        let fail = |e: io::Error| CameraError::Open {
            device: device.to_string(),
            detail: explain(&e),
        };
        let dev = Device::with_path(device).map_err(fail)?;
        let offered = dev.enum_formats().map_err(fail)?;
        if offered.is_empty() {
            // The list hides why it is empty: a file that is no V4L2 device says so here.
            let detail = match dev.format() {
                Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => explain(&e),
                _ => "it offers no video formats (some /dev/video nodes carry only metadata: \
                      try the next one)"
                    .into(),
            };
            return Err(CameraError::Open {
                device: device.to_string(),
                detail,
            });
        }
        let wanted = [FourCC::new(b"MJPG"), FourCC::new(b"YUYV")]
            .into_iter()
            .find(|f| offered.iter().any(|d| d.fourcc == *f));
        let Some(fourcc) = wanted else {
            let names: Vec<String> = offered.iter().map(|d| d.fourcc.to_string()).collect();
            return Err(CameraError::Open {
                device: device.to_string(),
                detail: format!(
                    "it offers {} frames; seesay reads MJPG or YUYV",
                    names.join(", ")
                ),
            });
        };
        let format = dev
            .set_format(&Format::new(1280, 720, fourcc))
            .map_err(fail)?;
        if format.fourcc != fourcc {
            return Err(CameraError::Open {
                device: device.to_string(),
                detail: format!(
                    "asked for {fourcc} frames, the driver gave {}",
                    format.fourcc
                ),
            });
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS).map_err(fail)?;
        stream.set_timeout(FRAME_TIMEOUT);
        Ok(Live {
            stream,
            _dev: dev,
            format,
        })
    }

    /// Takes a fresh picture: the stale buffers are skipped, the next one converted.
    fn take(&mut self, device: &str) -> Result<RgbImage, CameraError> {
        let lost = |e: io::Error| CameraError::Frames {
            device: device.to_string(),
            detail: explain(&e),
        };
        for _ in 1..BUFFERS {
            self.stream.next().map_err(lost)?;
        }
        let mut tries = 0;
        loop {
            let (buf, meta) = self.stream.next().map_err(lost)?;
            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            let f = &self.format;
            let img = match &f.fourcc.repr {
                b"MJPG" => mjpeg_to_rgb(&buf[..used], device, MAX_SIDE).map_err(CameraError::from),
                _ => yuyv_to_rgb(&buf[..used], f.width, f.height, f.stride).ok_or_else(|| {
                    CameraError::Frames {
                        device: device.to_string(),
                        detail: format!("a YUYV frame of {used} bytes is short"),
                    }
                }),
            };
            tries += 1;
            match img {
                Ok(img) => return Ok(img),
                Err(e) if tries >= TRIES => return Err(e),
                Err(e) => tracing::debug!("skipping a bad frame: {e}"),
            }
        }
    }
}

/// An OS error as a user can act on it.
fn explain(e: &io::Error) -> String {
    let what = match e.raw_os_error() {
        Some(libc::ENOENT) => "no such device: is the camera plugged in? (`ls /dev/video*` lists the cameras)",
        Some(libc::EACCES | libc::EPERM) => "permission denied: add your user to the 'video' group (sudo usermod -aG video $USER, then log in again)",
        Some(libc::EBUSY) => "the camera is busy: another program is using it",
        Some(libc::ENODEV) => "the device is gone (unplugged?)",
        Some(libc::ENOTTY) => "not a V4L2 video capture device",
        _ if e.kind() == io::ErrorKind::TimedOut => {
            return format!(
                "no frame for {} s (stalled or unplugged?)",
                FRAME_TIMEOUT.as_secs()
            )
        }
        _ => return e.to_string(),
    };
    format!("{what} ({e})")
}
