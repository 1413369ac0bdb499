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
    let dev = output_device(device)?;
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

/// The named output device, or the default one for an empty name.
fn output_device(device: &str) -> Result<cpal::Device, SpeakerError> {
    let host = cpal::default_host();
    Ok(if device.is_empty() {
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
    })
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

/// A piece of speech for the live output, tagged with its turn.
pub struct Chunk {
    pub turn: u64,
    pub samples: Vec<f32>,
}

/// Streaming playback for the live pipeline: chunks go in through a bounded channel; the device
/// callback drops chunks of turns older than `current` (barge-in) and notes when each turn's first
/// sample went out.
pub struct LiveSpeaker {
    pub tx: crossbeam_channel::Sender<Chunk>,
    /// Device rate: chunks must already be at this rate.
    pub rate: u32,
    /// The last turn whose first sample was played, and when (ns since `t0`).
    pub started_turn: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub started_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Samples still buffered in the callback (not yet played).
    pub queued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub errors: crossbeam_channel::Receiver<String>,
    _stream: cpal::Stream,
}

impl LiveSpeaker {
    pub fn open(
        device: &str,
        current: std::sync::Arc<std::sync::atomic::AtomicU64>,
        t0: std::time::Instant,
    ) -> Result<LiveSpeaker, SpeakerError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let dev = output_device(device)?;
        let supported = dev
            .default_output_config()
            .map_err(|e| SpeakerError::Device(e.to_string()))?;
        let rate = supported.sample_rate();
        let format = supported.sample_format();
        let config: cpal::StreamConfig = supported.config();
        let channels = config.channels as usize;
        let (tx, rx) = crossbeam_channel::bounded::<Chunk>(64);
        let (tx_err, errors) = crossbeam_channel::bounded::<String>(4);
        let started_turn = Arc::new(AtomicU64::new(0));
        let started_ns = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicU64::new(0));
        let (st, sn, q) = (started_turn.clone(), started_ns.clone(), queued.clone());
        let mut cur: Option<Chunk> = None;
        let mut pos = 0usize;
        let mut next = move || -> f32 {
            loop {
                let now_turn = current.load(Ordering::Acquire);
                if let Some(c) = &cur {
                    if c.turn >= now_turn && pos < c.samples.len() {
                        if pos == 0 && st.load(Ordering::Relaxed) < c.turn {
                            st.store(c.turn, Ordering::Relaxed);
                            sn.store(t0.elapsed().as_nanos() as u64, Ordering::Release);
                        }
                        pos += 1;
                        q.fetch_sub(1, Ordering::Relaxed);
                        return c.samples[pos - 1];
                    }
                    let left = c.samples.len().saturating_sub(pos) as u64;
                    q.fetch_sub(left, Ordering::Relaxed);
                }
                match rx.try_recv() {
                    Ok(c) => {
                        cur = Some(c);
                        pos = 0;
                    }
                    Err(_) => {
                        cur = None;
                        return 0.0;
                    }
                }
            }
        };
        let err_fn = move |e: cpal::Error| {
            let _ = tx_err.try_send(e.to_string());
        };
        macro_rules! build {
            ($t:ty) => {
                dev.build_output_stream::<$t, _, _>(
                    config.clone(),
                    move |out: &mut [$t], _| {
                        for frame in out.chunks_mut(channels) {
                            let v = next();
                            frame
                                .iter_mut()
                                .for_each(|s| *s = <$t as cpal::FromSample<f32>>::from_sample_(v));
                        }
                    },
                    err_fn,
                    None,
                )
            };
        }
        let stream = match format {
            cpal::SampleFormat::F32 => build!(f32),
            cpal::SampleFormat::I16 => build!(i16),
            cpal::SampleFormat::I32 => build!(i32),
            cpal::SampleFormat::U16 => build!(u16),
            other => {
                return Err(SpeakerError::Device(format!(
                    "unsupported sample format {other}"
                )))
            }
        }
        .map_err(|e| SpeakerError::Device(e.to_string()))?;
        stream
            .play()
            .map_err(|e| SpeakerError::Device(e.to_string()))?;
        Ok(LiveSpeaker {
            tx,
            rate,
            started_turn,
            started_ns,
            queued,
            errors,
            _stream: stream,
        })
    }
}
