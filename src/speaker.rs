//! Playback: mono f32 PCM in, sound out of the default (or a named) output device through cpal.

use std::sync::mpsc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SizedSample};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    #[error("no audio output device: use `-o FILE.wav` to write the speech to a file instead")]
    NoDevice,
    #[error("audio output device {name:?} not found (available: {available})")]
    UnknownDevice { name: String, available: String },
    #[error("audio output failed: {0} (use `-o FILE.wav` to write the speech to a file instead)")]
    Device(String),
    #[error(transparent)]
    Resample(#[from] crate::audio::AudioError),
}

/// Plays `samples` (mono, `rate` Hz) on the output device and returns when playback is done.
/// `device` empty means the system default.
pub fn play(samples: &[f32], rate: u32, device: &str) -> Result<(), SpeakerError> {
    let host = cpal::default_host();
    let dev = if device.is_empty() {
        host.default_output_device().ok_or(SpeakerError::NoDevice)?
    } else {
        let mut names = Vec::new();
        let mut found = None;
        for d in host
            .output_devices()
            .map_err(|e| SpeakerError::Device(e.to_string()))?
        {
            let name = d.description().map(|n| n.to_string()).unwrap_or_default();
            if name == device {
                found = Some(d);
                break;
            }
            names.push(name);
        }
        found.ok_or_else(|| SpeakerError::UnknownDevice {
            name: device.into(),
            available: names.join(", "),
        })?
    };
    let supported = dev
        .default_output_config()
        .map_err(|e| SpeakerError::Device(e.to_string()))?;
    let out_rate = supported.sample_rate();
    let pcm = crate::audio::resample(samples, rate, out_rate)?;
    let config: cpal::StreamConfig = supported.config();
    match supported.sample_format() {
        cpal::SampleFormat::F32 => run::<f32>(&dev, config, pcm),
        cpal::SampleFormat::I16 => run::<i16>(&dev, config, pcm),
        cpal::SampleFormat::I32 => run::<i32>(&dev, config, pcm),
        cpal::SampleFormat::U16 => run::<u16>(&dev, config, pcm),
        other => Err(SpeakerError::Device(format!(
            "unsupported sample format {other}"
        ))),
    }
}

fn run<T>(dev: &cpal::Device, config: cpal::StreamConfig, pcm: Vec<f32>) -> Result<(), SpeakerError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = config.channels as usize;
    let total = pcm.len();
    let secs = total as f64 / config.sample_rate as f64;
    let (tx_done, rx_done) = mpsc::sync_channel::<Result<(), String>>(2);
    let tx_err = tx_done.clone();
    let mut pos = 0usize;
    let stream = dev
        .build_output_stream::<T, _, _>(
            config,
            move |out: &mut [T], _| {
                for frame in out.chunks_mut(channels) {
                    let v = pcm.get(pos).copied().unwrap_or(0.0);
                    frame.iter_mut().for_each(|s| *s = T::from_sample(v));
                    pos += 1;
                }
                if pos >= total {
                    let _ = tx_done.try_send(Ok(()));
                }
            },
            move |e| {
                let _ = tx_err.try_send(Err(e.to_string()));
            },
            None,
        )
        .map_err(|e| SpeakerError::Device(e.to_string()))?;
    stream
        .play()
        .map_err(|e| SpeakerError::Device(e.to_string()))?;
    // A device that never pulls data must not hang us: allow the audio's length plus slack.
    let limit = Duration::from_secs_f64(secs + 2.0);
    match rx_done.recv_timeout(limit) {
        Ok(Ok(())) => {
            // Let the device drain its own buffer.
            std::thread::sleep(Duration::from_millis(150));
            Ok(())
        }
        Ok(Err(e)) => Err(SpeakerError::Device(e)),
        Err(_) => Err(SpeakerError::Device(
            "the output device stopped taking audio".into(),
        )),
    }
}
