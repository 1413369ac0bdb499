//! Whisper-style log-mel features of 16 kHz audio: what the Smart Turn end-of-turn model reads.
//!
//! The same computation as Hugging Face's `WhisperFeatureExtractor` (and the numpy copy of it in
//! pipecat's `_whisper_features.py`): the waveform normalised to zero mean and unit variance, a
//! centred (reflect-padded) 400-point periodic-Hann STFT every 160 samples, the power spectrum
//! projected on 80 Slaney-normalised mel filters from 0 to 8 kHz, log10, clamped to 8 below the
//! maximum and scaled by (x + 4) / 4. The last STFT frame is dropped, as the reference does.

use std::sync::OnceLock;

use realfft::RealFftPlanner;

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
const RATE: f64 = 16_000.0;
const BINS: usize = N_FFT / 2 + 1;

fn hz_to_mel(f: f64) -> f64 {
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * 27.0 / 6.4f64.ln()
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= 15.0 {
        1000.0 * ((m - 15.0) * 6.4f64.ln() / 27.0).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// The filter bank, `[mel][bin]`.
fn filters() -> &'static Vec<[f64; BINS]> {
    static F: OnceLock<Vec<[f64; BINS]>> = OnceLock::new();
    F.get_or_init(|| {
        let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(RATE / 2.0));
        let edges: Vec<f64> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
            .collect();
        (0..N_MELS)
            .map(|m| {
                let mut row = [0.0; BINS];
                let enorm = 2.0 / (edges[m + 2] - edges[m]);
                for (k, w) in row.iter_mut().enumerate() {
                    let f = k as f64 * (RATE / 2.0) / (BINS - 1) as f64;
                    let down = (f - edges[m]) / (edges[m + 1] - edges[m]);
                    let up = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
                    *w = down.min(up).max(0.0) * enorm;
                }
                row
            })
            .collect()
    })
}

/// Log-mel features of `audio` (16 kHz), `N_MELS` rows of `audio.len() / HOP` frames, row-major.
pub fn log_mel(audio: &[f32]) -> Vec<f32> {
    let n = audio.len();
    let frames = n / HOP; // 1 + n / HOP frames, the last one dropped
    if frames == 0 {
        return Vec::new();
    }
    // Zero mean, unit variance (in f32, as the reference does).
    let mean = audio.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = audio
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let scale = 1.0 / (var as f32 + 1e-7).sqrt();
    let x: Vec<f64> = audio
        .iter()
        .map(|&v| ((v - mean as f32) * scale) as f64)
        .collect();
    // Reflect padding by N_FFT / 2 on both sides (numpy's "reflect": the edge is not repeated).
    let pad = N_FFT / 2;
    let at = |i: isize| -> f64 {
        let last = n as isize - 1;
        let mut j = i - pad as isize;
        if j < 0 {
            j = -j;
        }
        if j > last {
            j = 2 * last - j;
        }
        x[j.clamp(0, last) as usize]
    };
    let window: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
        .collect();
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spec = fft.make_output_vec();
    let bank = filters();
    let mut out = vec![0f64; N_MELS * frames];
    let mut power = [0f64; BINS];
    for t in 0..frames {
        for (i, v) in input.iter_mut().enumerate() {
            *v = at((t * HOP + i) as isize) * window[i];
        }
        fft.process(&mut input, &mut spec)
            .expect("buffers come from the same plan");
        for (p, c) in power.iter_mut().zip(&spec) {
            *p = c.norm_sqr();
        }
        for (m, row) in bank.iter().enumerate() {
            let e: f64 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            out[m * frames + t] = e.max(1e-10).log10();
        }
    }
    let max = out.iter().copied().fold(f64::MIN, f64::max);
    out.iter()
        .map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_up_its_own_mel_band() {
        let tone = |hz: f32| -> Vec<f32> {
            (0..16_000)
                .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / 16_000.0).sin() * 0.3)
                .collect()
        };
        let band = |audio: &[f32]| {
            let f = log_mel(audio);
            let frames = audio.len() / HOP;
            assert_eq!(f.len(), N_MELS * frames);
            let t = frames / 2;
            (0..N_MELS)
                .max_by(|&a, &b| f[a * frames + t].total_cmp(&f[b * frames + t]))
                .unwrap()
        };
        // Slaney scale: linear below 1 kHz (80 filters up to ~45.2 mel at 8 kHz, 0.55 mel apart).
        let low = band(&tone(500.0));
        let high = band(&tone(4000.0));
        assert!((12..=15).contains(&low), "500 Hz in band {low}");
        assert!(high > 55 && high < 70, "4 kHz in band {high}");
        // Values are clamped to 8 (log10) below the loudest, i.e. 2 after scaling.
        let f = log_mel(&tone(1000.0));
        let max = f.iter().copied().fold(f32::MIN, f32::max);
        let min = f.iter().copied().fold(f32::MAX, f32::min);
        assert!((max - min - 2.0).abs() < 1e-4, "{min}..{max}");
    }

    #[test]
    fn filters_are_slaney_normalised_triangles() {
        let bank = filters();
        for row in bank {
            let peak = row.iter().copied().fold(0.0, f64::max);
            assert!(peak > 0.0);
            // Each triangle has area ~1 in Hz once normalised (2 / width times width / 2).
            let area: f64 = row.iter().sum::<f64>() * (RATE / 2.0) / (BINS - 1) as f64;
            assert!((0.5..1.5).contains(&area), "area {area}");
        }
    }
}
