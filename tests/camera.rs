//! The camera in `seesay run`: a camera that is missing or is no camera fails at start-up with
//! an error naming the device (the scene-change logic and a camera that disappears mid-run are
//! tested on fake frame sources in the library's pipeline tests).

mod common;

use common::*;

#[test]
fn a_missing_camera_is_a_clear_error_naming_it() {
    assert_clear_error(&["run", "--camera", "/dev/video9"], &[], "/dev/video9");
    // An index names /dev/videoN.
    assert_clear_error(&["run", "--camera", "9"], &[], "/dev/video9");
    assert_clear_error(
        &["run", "--camera", "/dev/null"],
        &[],
        "camera /dev/null: not a V4L2 video capture device",
    );
}
