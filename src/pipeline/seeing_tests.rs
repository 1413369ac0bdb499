//! The pipeline's eyes on fake frame sources and a fake captioner: a changed scene is described
//! and the same scene is not, the newest frame wins over a slow describer, and a camera that
//! disappears (and comes back) leaves the conversation going. The threads, the slot, the
//! scene-change check and the capture loop are the real ones.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};

use super::messages::Update;
use super::tests::{done, start_seeing, Harness, Sight};
use crate::stages::camera::{CameraError, FrameSource};
use crate::stages::caption::{CaptionError, Captioner};

use super::fakes::Fakes;

/// What a fake camera gives at one grab.
#[derive(Clone, Copy, Debug)]
enum Shot {
    /// A picture all of this grey level.
    Grey(u8),
    /// A picture of a new grey level at each grab (the grab's number).
    Moving,
    /// An error: the device is gone.
    Gone,
    /// No more pictures.
    End,
}

/// A camera that follows a script, then repeats `then`; it counts its grabs and its drop.
struct Scripted {
    script: Vec<Shot>,
    then: Shot,
    grabs: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl FrameSource for Scripted {
    fn grab(&mut self) -> Result<Option<RgbImage>, CameraError> {
        let n = self.grabs.fetch_add(1, Ordering::SeqCst);
        let grey = |v: u8| Ok(Some(RgbImage::from_pixel(8, 6, Rgb([v, v, v]))));
        match self.script.get(n).copied().unwrap_or(self.then) {
            Shot::Grey(v) => grey(v),
            Shot::Moving => grey((n % 256) as u8),
            Shot::Gone => Err(CameraError::Frames {
                device: "/dev/video-fake".into(),
                detail: "the device is gone".into(),
            }),
            Shot::End => Ok(None),
        }
    }
    fn name(&self) -> String {
        "/dev/video-fake".into()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Names the grey level of a picture, after `ms` of "thinking"; counts its calls.
struct GreyNamer {
    ms: u64,
    calls: Arc<AtomicUsize>,
}

impl Captioner for GreyNamer {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.ms));
        Ok(format!("grey {}", img.get_pixel(0, 0)[0]))
    }
    fn describe(&self) -> String {
        "grey namer".into()
    }
}

struct Eyes {
    harness: Harness,
    grabs: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

/// A pipeline watching a scripted camera every `interval_s`, described when a picture differs
/// from the last described one by `scene_change`, each description taking `caption_ms`.
fn watch(
    script: Vec<Shot>,
    then: Shot,
    interval_s: f32,
    scene_change: f32,
    caption_ms: u64,
) -> Eyes {
    watch_with(
        script,
        then,
        interval_s,
        scene_change,
        caption_ms,
        Fakes::default(),
    )
}

/// `watch`, with the other stages' fakes set.
fn watch_with(
    script: Vec<Shot>,
    then: Shot,
    interval_s: f32,
    scene_change: f32,
    caption_ms: u64,
    fakes: Fakes,
) -> Eyes {
    let grabs = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let sight = Sight {
        captioner: Box::new(GreyNamer {
            ms: caption_ms,
            calls: calls.clone(),
        }),
        source: Box::new(Scripted {
            script,
            then,
            grabs: grabs.clone(),
            dropped: dropped.clone(),
        }),
        interval_s,
        scene_change,
    };
    Eyes {
        harness: start_seeing(false, fakes, Some(sight)),
        grabs,
        dropped,
        calls,
    }
}

/// The next description: its text and the sequence number of the frame described.
fn next_caption(h: &mut Harness) -> (String, u64) {
    match h.wait_for("a description", |u| matches!(u, Update::Caption { .. })) {
        Update::Caption { text, frame } => (text, frame.seq),
        _ => unreachable!(),
    }
}

/// Waits until `f` holds (at most 5 s).
fn until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "no {what} within 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_changed_scene_is_described_and_the_same_scene_is_not() {
    use Shot::Grey;
    let script = [40, 40, 40, 200, 200, 200, 40, 40, 40].map(Grey).to_vec();
    let mut eyes = watch(script, Shot::End, 0.02, 0.03, 1);
    let first = next_caption(&mut eyes.harness);
    assert_eq!(
        first,
        ("grey 40".to_string(), 0),
        "the first picture, before anything is heard"
    );
    let (text, seq) = next_caption(&mut eyes.harness);
    assert_eq!(text, "grey 200");
    assert!((3..=5).contains(&seq), "described frame {seq}");
    let (text, seq) = next_caption(&mut eyes.harness);
    assert_eq!(text, "grey 40");
    assert!((6..=8).contains(&seq), "described frame {seq}");
    until("end of the script", || {
        eyes.grabs.load(Ordering::SeqCst) >= 10
    });
    // The conversation goes on with the source over.
    eyes.harness.ask(1);
    eyes.harness.wait_for("turn 1 done", |u| done(u, 1));
    let (result, seen, _, _) = eyes.harness.finish();
    result.expect("the run ends cleanly");
    let captions = seen
        .iter()
        .filter(|u| matches!(u, Update::Caption { .. }))
        .count();
    assert_eq!(captions, 3, "three scenes, three descriptions");
    assert_eq!(
        eyes.calls.load(Ordering::SeqCst),
        3,
        "an unchanged scene costs no caption"
    );
}

#[test]
fn the_newest_frame_wins_over_a_slow_describer() {
    // Every picture differs (threshold 0): only the slot decides what is described.
    let mut eyes = watch(Vec::new(), Shot::Moving, 0.01, 0.0, 100);
    let seqs: Vec<u64> = (0..6).map(|_| next_caption(&mut eyes.harness).1).collect();
    let (result, _, _, _) = eyes.harness.finish();
    result.expect("the run ends cleanly");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order: {seqs:?}");
    // A queue would describe every frame (steps of 1); the slot skips to the newest.
    let step = (seqs[5] - seqs[1]) as f64 / 4.0;
    assert!(step >= 3.0, "frames described: {seqs:?}");
    assert!(
        eyes.dropped.load(Ordering::SeqCst),
        "the camera thread ended"
    );
}

#[test]
fn a_camera_that_disappears_leaves_the_conversation_going() {
    let mut eyes = watch(vec![Shot::Grey(40)], Shot::Gone, 0.01, 0.03, 1);
    next_caption(&mut eyes.harness);
    until("retries", || eyes.grabs.load(Ordering::SeqCst) >= 5);
    eyes.harness.ask(1);
    eyes.harness.wait_for("turn 1 done", |u| done(u, 1));
    let t = Instant::now();
    let (result, seen, _, _) = eyes.harness.finish();
    result.expect("a lost camera does not fail the run");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        eyes.dropped.load(Ordering::SeqCst),
        "the camera thread ended"
    );
    assert!(seen.iter().any(|u| matches!(u, Update::TurnDone(_))));
}

#[test]
fn a_camera_that_comes_back_is_described_again() {
    use Shot::{Gone, Grey};
    let script = vec![Grey(40), Grey(40), Gone, Gone, Gone, Gone, Grey(40)];
    let mut eyes = watch(script, Grey(200), 0.01, 0.03, 1);
    assert_eq!(next_caption(&mut eyes.harness).0, "grey 40");
    let (text, seq) = next_caption(&mut eyes.harness);
    assert_eq!(
        text, "grey 200",
        "the same scene after the gap is not described again"
    );
    assert!(seq >= 3, "{seq}");
    let (result, _, _, _) = eyes.harness.finish();
    result.expect("the run ends cleanly");
}

#[test]
fn a_language_model_that_takes_images_is_shown_the_frame_with_the_question() {
    for sees in [true, false] {
        let fakes = Fakes {
            llm_sees: sees,
            ..Fakes::default()
        };
        let mut eyes = watch_with(vec![Shot::Grey(40)], Shot::End, 0.02, 0.03, 1, fakes);
        next_caption(&mut eyes.harness);
        eyes.harness.ask(1);
        let answer = match eyes.harness.wait_for("turn 1 done", |u| done(u, 1)) {
            Update::TurnDone(m) => m.answer,
            _ => unreachable!(),
        };
        let (result, _, _, _) = eyes.harness.finish();
        result.expect("the run ends cleanly");
        // The fake model says "(seen)" when a picture came with the question.
        assert_eq!(answer.contains("(seen)"), sees, "{answer}");
    }
}
