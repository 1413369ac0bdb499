//! Long audio in windows: a stream of 16 kHz samples in, windows of at most 30 s out, each cut
//! at the quietest point of its last third (so words are rarely split), and each handed to a
//! `Transcriber`.

use super::{AsrError, Transcriber};
use crate::media::audio::{rms, SAMPLE_RATE};
use crate::text::transcript::Segment;

/// Transcribes audio of any length: chunks of 16 kHz samples in (a file being decoded, an upload),
/// cut into windows of at most `window_seconds` at quiet points; `progress` hears how many
/// seconds are done after each window. Returns the audio's length in seconds and the segments.
pub fn transcribe_stream<E: From<AsrError>>(
    model: &mut dyn Transcriber,
    window_seconds: f32,
    chunks: impl IntoIterator<Item = Result<Vec<f32>, E>>,
    mut progress: impl FnMut(f64),
) -> Result<(f64, Vec<Segment>), E> {
    let mut windower = Windower::new(window_seconds);
    let mut segments = Vec::new();
    let mut samples = 0usize;
    let mut run = |segments: &mut Vec<Segment>, (start, window): (f64, Vec<f32>)| {
        segments.extend(model.transcribe(&window, start)?);
        progress(start + window.len() as f64 / SAMPLE_RATE as f64);
        Ok::<(), AsrError>(())
    };
    for chunk in chunks {
        let chunk = chunk?;
        samples += chunk.len();
        for w in windower.push(&chunk) {
            run(&mut segments, w)?;
        }
    }
    if let Some(w) = windower.finish() {
        run(&mut segments, w)?;
    }
    Ok((samples as f64 / SAMPLE_RATE as f64, segments))
}

/// Cuts a stream of samples into windows of at most `max` samples, each cut at the quietest
/// 100 ms frame of the window's last third, so words are rarely split.
pub struct Windower {
    buf: Vec<f32>,
    max: usize,
    /// Samples already handed out, for timestamps.
    consumed: usize,
}

impl Windower {
    pub fn new(max_seconds: f32) -> Windower {
        let max = (max_seconds.clamp(1.0, 30.0) * SAMPLE_RATE as f32) as usize;
        Windower {
            buf: Vec::with_capacity(max * 2),
            max,
            consumed: 0,
        }
    }

    /// Adds samples; returns every full window now available, with its start time in seconds.
    pub fn push(&mut self, samples: &[f32]) -> Vec<(f64, Vec<f32>)> {
        self.buf.extend_from_slice(samples);
        let mut out = Vec::new();
        while self.buf.len() >= self.max {
            let cut = quietest_cut(&self.buf[..self.max]);
            out.push(self.take(cut));
        }
        out
    }

    /// The remaining samples as a last window.
    pub fn finish(&mut self) -> Option<(f64, Vec<f32>)> {
        (!self.buf.is_empty()).then(|| self.take(self.buf.len()))
    }

    fn take(&mut self, n: usize) -> (f64, Vec<f32>) {
        let start = self.consumed as f64 / SAMPLE_RATE as f64;
        self.consumed += n;
        (start, self.buf.drain(..n).collect())
    }
}

fn quietest_cut(window: &[f32]) -> usize {
    let frame = SAMPLE_RATE as usize / 10;
    let from = window.len() * 2 / 3 / frame;
    let frames = window.len() / frame;
    (from..frames)
        .min_by(|&a, &b| {
            let ra = rms(&window[a * frame..(a + 1) * frame]);
            let rb = rms(&window[b * frame..(b + 1) * frame]);
            ra.total_cmp(&rb)
        })
        .map_or(window.len(), |i| i * frame + frame / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windower_cuts_at_the_quiet_spot_and_keeps_every_sample() {
        let sr = SAMPLE_RATE as usize;
        // 25 s loud, 1 s silent, 14 s loud.
        let mut s = vec![0.3f32; 25 * sr];
        s.extend(vec![0.0; sr]);
        s.extend(vec![0.3; 14 * sr]);
        let mut w = Windower::new(30.0);
        let mut windows = Vec::new();
        for chunk in s.chunks(4000) {
            windows.extend(w.push(chunk));
        }
        windows.extend(w.finish());
        assert_eq!(windows.len(), 2);
        let (t0, first) = &windows[0];
        assert_eq!(*t0, 0.0);
        let cut = first.len() as f64 / sr as f64;
        assert!((25.0..26.0).contains(&cut), "cut at {cut}s");
        assert!((windows[1].0 - cut).abs() < 1e-9);
        assert_eq!(windows.iter().map(|(_, w)| w.len()).sum::<usize>(), s.len());
    }
}
