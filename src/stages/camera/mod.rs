//! The camera: a frame source (a V4L2 camera, a folder of images, a client's snapshots) in,
//! pictures out into a newest-wins slot, and the check that tells a new scene from the same one
//! so that only a changed scene is described.
//!
//! `frames.rs` holds the slot, the `FrameSource` trait and the capture loop; `scene.rs` the
//! scene-change check; `convert.rs` the YUYV and MJPEG conversions; `v4l2.rs` the Linux camera.

pub mod convert;
pub mod frames;
pub mod scene;
#[cfg(target_os = "linux")]
pub mod v4l2;

pub use self::frames::{
    capture, frame_slot, CameraError, FolderSource, Frame, FrameReceiver, FrameSender, FrameSource,
};
pub use self::scene::{SceneChange, Thumbnail, Verdict};

/// The device a `--camera` value names: a path as given, or an index N for /dev/videoN (empty:
/// /dev/video0).
pub fn device_path(spec: &str) -> String {
    let spec = spec.trim();
    match spec {
        "" => "/dev/video0".into(),
        n if n.chars().all(|c| c.is_ascii_digit()) => format!("/dev/video{n}"),
        path => path.into(),
    }
}

/// Opens the camera `spec` names (see `device_path`) and takes a first picture, so a camera
/// that is missing, busy, not allowed or of no readable format fails here, naming the device.
#[cfg(target_os = "linux")]
pub fn open(spec: &str) -> Result<Box<dyn FrameSource>, CameraError> {
    Ok(Box::new(v4l2::V4l2Camera::open(&device_path(spec))?))
}

/// Cameras are read through V4L2, which only Linux has.
#[cfg(not(target_os = "linux"))]
pub fn open(spec: &str) -> Result<Box<dyn FrameSource>, CameraError> {
    Err(CameraError::Open {
        device: device_path(spec),
        detail: "seesay reads cameras through V4L2, on Linux only; use --image with pictures \
                 saved from the camera instead"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_is_named_by_path_or_index() {
        assert_eq!(device_path(""), "/dev/video0");
        assert_eq!(device_path("2"), "/dev/video2");
        assert_eq!(
            device_path("/dev/v4l/by-id/usb-cam"),
            "/dev/v4l/by-id/usb-cam"
        );
    }

    #[test]
    fn a_missing_camera_is_an_error_naming_it() {
        let e = open("/dev/video-none-here").err().expect("no such camera");
        let msg = e.to_string();
        assert!(msg.contains("/dev/video-none-here"), "{msg}");
    }
}
