//! Media: audio files and buffers (decoding, resampling, WAV, PCM) and images (decoding with
//! limits, data URIs). Knows nothing of models or stages.

pub mod audio;
pub mod encode;
pub mod image;
pub mod mel;
mod riff;
pub mod wav;
