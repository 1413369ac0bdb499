//! Echo cancellation: the microphone's audio in, the same with seesay's own voice (as the room
//! brings it back from the speaker) taken out. WebRTC's AEC3 (with its high-pass filter and
//! noise suppression) through `sonora`, a pure-Rust port. The speaker hands what it actually
//! plays to an `EchoReference`; the microphone's thread feeds it to the canceller as the far-end
//! signal, 10 ms at a time, before each 10 ms of capture. AEC3 finds the delay between the two
//! itself.

use std::collections::VecDeque;
use std::sync::Mutex;

use sonora::config::{EchoCanceller as Aec, NoiseSuppression};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::media::audio::{AudioError, StreamResampler, SAMPLE_RATE};

/// 10 ms at 16 kHz: AEC3's frame.
const FRAME: usize = SAMPLE_RATE as usize / 100;
/// The reference kept at most (what the speaker played and the microphone has not yet heard).
const MAX_REFERENCE_S: f64 = 1.0;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EchoError {
    #[error(transparent)]
    Resample(#[from] AudioError),
    #[error("echo cancellation failed: {0}")]
    Process(String),
}

/// What the speaker played, at the device's rate, waiting to be fed to the canceller.
#[derive(Default)]
pub struct EchoReference {
    /// (the speaker's rate, its samples not yet taken).
    played: Mutex<(u32, VecDeque<f32>)>,
}

impl EchoReference {
    /// The speaker (at `rate` Hz) played `samples`, silence included: the reference keeps time.
    pub fn played(&self, rate: u32, samples: &[f32]) {
        let mut p = super::lock(&self.played);
        if p.0 != rate {
            *p = (rate, VecDeque::new());
        }
        p.1.extend(samples);
        let max = (MAX_REFERENCE_S * rate as f64) as usize;
        let extra = p.1.len().saturating_sub(max);
        p.1.drain(..extra);
    }

    fn take(&self) -> (u32, Vec<f32>) {
        let mut p = super::lock(&self.played);
        (p.0, p.1.drain(..).collect())
    }
}

/// The canceller for one microphone.
pub struct EchoCanceller {
    apm: AudioProcessing,
    reference: std::sync::Arc<EchoReference>,
    /// The speaker's rate to 16 kHz (made when the speaker's rate is known).
    resampler: Option<(u32, StreamResampler)>,
    /// Far-end audio at 16 kHz not yet fed, and capture not yet processed.
    far: VecDeque<f32>,
    near: Vec<f32>,
}

impl EchoCanceller {
    pub fn new(reference: std::sync::Arc<EchoReference>) -> Result<EchoCanceller, EchoError> {
        let config = Config {
            echo_canceller: Some(Aec::default()),
            noise_suppression: Some(NoiseSuppression::default()),
            ..Default::default()
        };
        let stream = StreamConfig::new(SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder()
            .config(config)
            .capture_config(stream)
            .render_config(stream)
            .build();
        Ok(EchoCanceller {
            apm,
            resampler: None,
            reference,
            far: VecDeque::new(),
            near: Vec::new(),
        })
    }

    /// Cleans `capture` (16 kHz mono, any length); returns what is ready (whole 10 ms frames).
    pub fn process(&mut self, capture: &[f32]) -> Result<Vec<f32>, EchoError> {
        let (rate, played) = self.reference.take();
        if !played.is_empty() {
            if self.resampler.as_ref().is_none_or(|r| r.0 != rate) {
                self.resampler = Some((rate, StreamResampler::new(rate, SAMPLE_RATE)?));
            }
            let (_, resampler) = self.resampler.as_mut().expect("just made");
            self.far.extend(resampler.push(&played)?);
        }
        self.near.extend_from_slice(capture);
        let frames = self.near.len() / FRAME;
        let mut out = vec![0.0f32; frames * FRAME];
        let fail = |e: sonora::Error| EchoError::Process(format!("{e:?}"));
        let mut far = [0.0f32; FRAME];
        let mut far_out = [0.0f32; FRAME];
        for (i, dest) in out.chunks_exact_mut(FRAME).enumerate() {
            // The far end for this 10 ms: what was played, or silence if nothing was.
            for v in far.iter_mut() {
                *v = self.far.pop_front().unwrap_or(0.0);
            }
            self.apm
                .process_render_f32(&[&far], &mut [&mut far_out])
                .map_err(fail)?;
            self.apm
                .process_capture_f32(&[&self.near[i * FRAME..(i + 1) * FRAME]], &mut [dest])
                .map_err(fail)?;
        }
        self.near.drain(..frames * FRAME);
        // Far-end audio the microphone will never catch up with (the speaker ran ahead) is
        // dropped, so the delay between the two stays within what AEC3 can find.
        let max = (MAX_REFERENCE_S * SAMPLE_RATE as f64) as usize / 2;
        let extra = self.far.len().saturating_sub(max);
        self.far.drain(..extra);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn energy(x: &[f32]) -> f32 {
        x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32
    }

    /// A far-end signal that comes back 40 ms later at half strength is mostly removed, and
    /// near-end "speech" over it is kept.
    #[test]
    fn the_speakers_echo_is_removed_and_the_user_is_kept() {
        let reference = Arc::new(EchoReference::default());
        let mut aec = EchoCanceller::new(reference.clone()).unwrap();
        let rate = SAMPLE_RATE as usize;
        let n = rate * 6;
        // Far end: noise in syllable-like bursts. Near end (4-5 s): a gliding tone in bursts.
        let mut x = 1u32;
        let far: Vec<f32> = (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let t = i as f32 / rate as f32;
                noise * 0.6 * (0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin())
            })
            .collect();
        let near: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                if !(4.0..5.0).contains(&t) {
                    return 0.0;
                }
                let burst = (2.0 * std::f32::consts::PI * 3.0 * t).sin().max(0.0);
                0.3 * burst * (2.0 * std::f32::consts::PI * (300.0 + 200.0 * t) * t).sin()
            })
            .collect();
        let delay = 640; // 40 ms
        let mut cleaned = Vec::new();
        let mut echo = Vec::new();
        for (k, chunk) in far.chunks(512).enumerate() {
            reference.played(SAMPLE_RATE, chunk);
            let start = k * 512;
            let e: Vec<f32> = (start..start + chunk.len())
                .map(|i| {
                    if i >= delay {
                        far[i - delay] * 0.5
                    } else {
                        0.0
                    }
                })
                .collect();
            let mic: Vec<f32> = e.iter().zip(&near[start..]).map(|(a, b)| a + b).collect();
            echo.extend_from_slice(&e);
            cleaned.extend(aec.process(&mic).unwrap());
        }
        // After two seconds to converge, the echo alone (2-4 s) is down by more than 10 dB.
        let (a, b) = (2 * rate, 4 * rate);
        let (before, after) = (energy(&echo[a..b]), energy(&cleaned[a..b]));
        eprintln!("echo {before} -> {after}");
        assert!(after < before / 10.0, "echo {before} -> {after}");
        // The user, talking over it (4-5 s), still comes through.
        let (a, b) = (4 * rate + 800, 5 * rate - 800);
        let (user, kept) = (energy(&near[a..b]), energy(&cleaned[a..b]));
        eprintln!("user {user} -> {kept}");
        assert!(kept > user / 4.0, "user {user} -> {kept}");
    }
}
