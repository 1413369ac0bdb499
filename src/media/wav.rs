//! WAV files written: as the audio comes (`WavWriter`, never destroying what was there), and
//! their headers.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::audio::{pcm16, AudioError};

/// Writes mono f32 samples as a 16-bit PCM WAV file, by the rules of `WavWriter`.
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<(), AudioError> {
    let len = u32::try_from(samples.len() * 2).map_err(|_| AudioError::Write {
        path: path.into(),
        detail: "longer than a WAV file can hold".into(),
    })?;
    let mut w = WavWriter::create(path, rate, Some(len))?;
    w.write(samples)?;
    w.finish()
}

/// A 16-bit mono WAV file written as its audio comes, so a long one never sits in memory.
/// `-` is standard output. A path that is not a regular file (a symlink, a FIFO, a device) is
/// written through, never replaced; a regular file is written beside its place and renamed over
/// it only by `finish`, so a partial file never appears (also when the disk fills up): dropped
/// unfinished, the writer removes its work and leaves the old file as it was.
pub struct WavWriter {
    path: PathBuf,
    out: std::io::BufWriter<Box<dyn SeekWrite>>,
    /// Where the finished file goes (a regular file being replaced): (temporary, final).
    replace: Option<(PathBuf, PathBuf)>,
    /// The file's lengths can be put right at the end (a regular file, written whole).
    seekable: bool,
    declared: Option<u32>,
    bytes: u64,
}

/// Standard output cannot seek; files can.
trait SeekWrite: std::io::Write + Send {
    fn rewind_to(&mut self, at: u64) -> std::io::Result<()>;
}

impl SeekWrite for File {
    fn rewind_to(&mut self, at: u64) -> std::io::Result<()> {
        std::io::Seek::seek(self, std::io::SeekFrom::Start(at)).map(|_| ())
    }
}

impl SeekWrite for std::io::Stdout {
    fn rewind_to(&mut self, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

impl WavWriter {
    /// Opens `path` for audio at `rate`; `length` (bytes of samples), if known, goes in the
    /// header (otherwise it says "as long as it goes" until `finish` can put it right).
    pub fn create(path: &Path, rate: u32, length: Option<u32>) -> Result<WavWriter, AudioError> {
        let err = |e: std::io::Error| AudioError::Write {
            path: path.into(),
            detail: e.to_string(),
        };
        let (out, replace, seekable): (Box<dyn SeekWrite>, _, _) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdout()), None, false)
        } else if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(err)?;
            (Box::new(f), None, false)
        } else {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = path.with_file_name(format!(".{name}.{}.part", std::process::id()));
            let f = File::create(&tmp).map_err(err)?;
            (Box::new(f), Some((tmp, path.to_path_buf())), true)
        };
        let mut w = WavWriter {
            path: path.into(),
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            replace,
            seekable,
            declared: length,
            bytes: 0,
        };
        let header = wav_header(rate, length);
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), AudioError> {
        std::io::Write::write_all(&mut self.out, bytes).map_err(|e| self.failed(e))
    }

    fn failed(&self, e: std::io::Error) -> AudioError {
        AudioError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// Appends samples.
    pub fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let data = pcm16(samples);
        self.bytes += data.len() as u64;
        if self.bytes > u32::MAX as u64 - 36 {
            return Err(self.failed(std::io::Error::other("longer than a WAV file can hold")));
        }
        self.put(&data)
    }

    /// Completes the file: lengths put right, everything on disk, and a replaced file renamed
    /// into place.
    pub fn finish(mut self) -> Result<(), AudioError> {
        use std::io::Write;
        let data = self.bytes as u32;
        if self.seekable && self.declared != Some(data) {
            let riff = data.saturating_add(36);
            let fixed = self.out.flush().and_then(|()| {
                let f = self.out.get_mut();
                f.rewind_to(4)?;
                f.write_all(&riff.to_le_bytes())?;
                f.rewind_to(40)?;
                f.write_all(&data.to_le_bytes())
            });
            fixed.map_err(|e| self.failed(e))?;
        }
        self.out.flush().map_err(|e| self.failed(e))?;
        if let Some((tmp, path)) = self.replace.take() {
            let placed = File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = placed {
                let _ = std::fs::remove_file(&tmp);
                return Err(self.failed(e));
            }
        }
        Ok(())
    }
}

impl Drop for WavWriter {
    fn drop(&mut self) {
        // Not finished: the partial file goes; the old one stays.
        if let Some((tmp, _)) = &self.replace {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A WAV header for 16-bit mono audio with `data_len` bytes of samples, or of unknown length (a
/// stream: the lengths say "as long as it goes").
pub fn wav_header(rate: u32, data_len: Option<u32>) -> Vec<u8> {
    let data = data_len.unwrap_or(u32::MAX);
    let riff = data_len.map_or(u32::MAX, |n| n.saturating_add(36));
    let mut h = Vec::with_capacity(44);
    h.extend(b"RIFF");
    h.extend(riff.to_le_bytes());
    h.extend(b"WAVEfmt ");
    h.extend(16u32.to_le_bytes());
    h.extend(1u16.to_le_bytes());
    h.extend(1u16.to_le_bytes());
    h.extend(rate.to_le_bytes());
    h.extend((rate * 2).to_le_bytes());
    h.extend(2u16.to_le_bytes());
    h.extend(16u16.to_le_bytes());
    h.extend(b"data");
    h.extend(data.to_le_bytes());
    h
}
