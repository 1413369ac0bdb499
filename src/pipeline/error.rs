//! Why a pipeline could not start or had to stop: a model that would not load, a device that
//! failed, a stage that erred or panicked.

use std::path::PathBuf;

use crate::media::audio::AudioError;
use crate::media::image::ImageError;
use crate::stages::asr::AsrError;
use crate::stages::caption::CaptionError;
use crate::stages::llm::LlmError;
use crate::stages::mic::MicError;
use crate::stages::speaker::SpeakerError;
use crate::stages::tts::TtsError;
use crate::stages::vad::VadError;
use crate::store::ModelError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Tts(#[from] TtsError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Vad(#[from] VadError),
    #[error(transparent)]
    Turn(#[from] crate::stages::turn::TurnError),
    #[error(transparent)]
    Wake(#[from] crate::stages::wake::WakeError),
    #[error(transparent)]
    Caption(#[from] CaptionError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Camera(#[from] crate::stages::camera::CameraError),
    #[error(transparent)]
    Mic(#[from] MicError),
    #[error(transparent)]
    Echo(#[from] crate::stages::echo::EchoError),
    #[error(transparent)]
    Speaker(#[from] SpeakerError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("{0}")]
    Options(&'static str),
    #[error("cannot create metrics file {path}: {error}")]
    Metrics {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot start the {name} thread: {error}")]
    Spawn {
        name: &'static str,
        error: std::io::Error,
    },
    #[error("{stage} stage: {error}")]
    Stage {
        stage: &'static str,
        error: Box<PipelineError>,
    },
    #[error("the {0} stage panicked")]
    Panicked(&'static str),
}
