//! The pipeline's eyes: a frame source (a camera, an image or a folder of images) or a client's
//! pictures in; out, the scene the language model is told about, and an `Update::Caption` with
//! the described frame. A frame is described only when the scene changed since the last
//! described one (`pipeline.scene_change`), so an unchanged room costs a thumbnail per frame.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::PipelineError;
use super::loops::next;
use super::messages::Update;
use super::models::{lock, Locked, Models};
use super::turns::{spawn, Context};
use crate::config::Config;
use crate::media::image::{image_files, jpeg_data_uri, load_image};
use crate::stages::camera::{
    capture, frame_slot, CameraError, FolderSource, Frame, FrameReceiver, FrameSource, SceneChange,
};
use crate::stages::caption::Captioner;

/// What the pipeline looks at: at most one of these.
pub(crate) struct Eyes {
    /// An image, or a folder of images shown one after another.
    pub image: Option<PathBuf>,
    /// A camera (or any frame source), asked for a picture every frame interval.
    pub source: Option<Box<dyn FrameSource>>,
    /// Pictures from elsewhere (a WebSocket client's snapshots), described as they come.
    pub pictures: Option<FrameReceiver>,
}

/// Describes the first picture before anything is heard (a failure there ends the run before
/// it starts), then starts the threads that take and describe the next ones.
pub(crate) fn start_seeing(
    cfg: &Config,
    models: &Models,
    eyes: Eyes,
    cx: &Arc<Context>,
) -> Result<Vec<JoinHandle<Option<()>>>, PipelineError> {
    let (source, mut pictures) = match (eyes.image, eyes.source, eyes.pictures) {
        (None, None, None) => return Ok(Vec::new()),
        (Some(path), None, None) => (Some(folder(&path, cfg.vision.max_side)?), None),
        (None, Some(source), None) => (Some(source), None),
        (None, None, Some(pictures)) => (None, Some(pictures)),
        _ => {
            return Err(PipelineError::Options(
                "more than one of an image, a camera and a client's pictures: pick one",
            ))
        }
    };
    let captioner = models.captioner.clone().ok_or(PipelineError::Options(
        "the models were loaded without a captioner",
    ))?;
    let sees = models.llm_sees;
    let mut scene = SceneChange::new(cfg.pipeline.scene_change);
    let mut stages = Vec::new();
    if let Some(mut source) = source {
        describe_first(source.as_mut(), &captioner, &mut scene, sees, cx)?;
        let (tx, rx) = frame_slot();
        let interval = Duration::from_secs_f32(cfg.pipeline.frame_interval_s.max(0.01));
        stages.push(spawn("frames", cx, move || {
            capture(source.as_mut(), interval, &tx);
            Ok(())
        })?);
        pictures = Some(rx);
    }
    if let Some(rx) = pictures {
        let cx2 = cx.clone();
        stages.push(spawn("captioner", cx, move || {
            caption_loop(captioner, rx, scene, sees, cx2)
        })?);
    }
    Ok(stages)
}

/// Takes the first picture and describes it: a source without one, or a failure to describe
/// it, is an error.
fn describe_first(
    source: &mut dyn FrameSource,
    captioner: &Locked<Box<dyn Captioner>>,
    scene: &mut SceneChange,
    sees: bool,
    cx: &Context,
) -> Result<(), PipelineError> {
    let first = source.grab()?.ok_or_else(|| CameraError::Frames {
        device: source.name(),
        detail: "it gave no picture".into(),
    })?;
    let frame = Frame {
        seq: 0,
        image: Arc::new(first),
        source: source.name(),
        at: Instant::now(),
    };
    let verdict = scene.check(&frame.image);
    let text = lock(captioner).caption(&frame.image)?;
    announce(cx, frame, text, sees);
    scene.described(verdict);
    Ok(())
}

/// An image file, or a folder's images in name order, as a frame source. The first must be
/// readable (it is the one described before anything is heard); later bad files are skipped.
fn folder(path: &std::path::Path, max_side: u32) -> Result<Box<dyn FrameSource>, PipelineError> {
    let files = image_files(path)?;
    if let Some(first) = files.first() {
        load_image(first, max_side)?;
    }
    Ok(Box::new(FolderSource::new(files, max_side)))
}

/// The captioner stage: frames in (the newest wins), the scene the LLM is told about out. A
/// frame of the scene last described is not described again.
fn caption_loop(
    captioner: Locked<Box<dyn Captioner>>,
    rx: FrameReceiver,
    mut scene: SceneChange,
    sees: bool,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("captioner").entered();
    while let Some(frame) = next(rx.channel(), &cx) {
        let verdict = scene.check(&frame.image);
        if !verdict.changed {
            tracing::debug!(
                image = %frame.source,
                difference = verdict.difference,
                "the same scene: not described again"
            );
            continue;
        }
        let captioned = lock(&captioner).caption(&frame.image);
        match captioned {
            Ok(text) => {
                announce(&cx, frame, text, sees);
                scene.described(verdict);
            }
            Err(e) => tracing::warn!("describing {} failed: {e}", frame.source),
        }
    }
    Ok(())
}

/// A new scene was described: the language model is told (and shown the frame, when it takes
/// images), the client hears of it.
fn announce(cx: &Context, frame: Frame, text: String, sees: bool) {
    tracing::info!(image = %frame.source, caption = %text, "the camera shows");
    *lock(&cx.scene) = Some(text.clone());
    if sees {
        match jpeg_data_uri(&frame.image) {
            Ok(uri) => *lock(&cx.picture) = Some(Arc::from(uri)),
            Err(e) => tracing::warn!("the frame cannot be shown to the language model: {e}"),
        }
    }
    // Kept when it differs from what was last seen (the camera's view of an unchanged room is
    // kept once), with a thumbnail.
    if let Some(m) = &cx.memory {
        if let Err(e) = lock(m).remember_scene(&text, Some(frame.image.as_ref()), "camera") {
            tracing::warn!("could not keep what the camera showed: {e}");
        }
    }
    cx.publish(Update::Caption { text, frame });
}
