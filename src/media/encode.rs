//! Audio encoders: mono f32 samples and their rate in, the bytes of a WAV, raw PCM, MP3 (LAME),
//! Ogg Opus (libopus, at 48 kHz) or FLAC (flacenc) file out, with the format's MIME type.

use std::fmt;

use super::audio::{pcm16, resample};
use super::wav::wav_header;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error(
        "response format {name:?} is not one seesay can encode: use one of {}",
        AudioFormat::names()
    )]
    Unsupported { name: String },
    #[error("cannot encode {format}: {detail}")]
    Encoder { format: AudioFormat, detail: String },
}

/// An audio file format seesay writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioFormat {
    /// 16-bit PCM WAV at the voice's rate.
    Wav,
    /// Raw 16-bit little-endian PCM, no header.
    Pcm,
    /// MPEG-1/2 Layer III, mono, 64 kbit/s, at the input's rate.
    Mp3,
    /// Opus in an Ogg container, mono, at 48 kHz.
    Opus,
    /// Lossless FLAC, 16-bit, at the input's rate.
    Flac,
}

impl AudioFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [AudioFormat; 5] = [
        AudioFormat::Wav,
        AudioFormat::Pcm,
        AudioFormat::Mp3,
        AudioFormat::Opus,
        AudioFormat::Flac,
    ];

    /// The format named `name` (as OpenAI's `response_format` names them).
    pub fn parse(name: &str) -> Result<Self, EncodeError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| EncodeError::Unsupported { name: name.into() })
    }

    pub fn name(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
            AudioFormat::Pcm => "pcm",
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Opus => "opus",
            AudioFormat::Flac => "flac",
        }
    }

    /// The names of all formats, for messages: "wav, pcm, mp3, opus, flac".
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// The MIME type of a file in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Opus => "audio/ogg",
            AudioFormat::Flac => "audio/flac",
        }
    }
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The whole file of `pcm` (mono, `rate` Hz, -1..1) in `format`.
pub fn encode(format: AudioFormat, pcm: &[f32], rate: u32) -> Result<Vec<u8>, EncodeError> {
    let fail = |detail: String| EncodeError::Encoder { format, detail };
    match format {
        AudioFormat::Wav => {
            let len = u32::try_from(pcm.len() * 2)
                .map_err(|_| fail("longer than a WAV file can hold".into()))?;
            let mut out = wav_header(rate, Some(len));
            out.extend(pcm16(pcm));
            Ok(out)
        }
        AudioFormat::Pcm => Ok(pcm16(pcm)),
        AudioFormat::Mp3 => mp3(pcm, rate).map_err(fail),
        AudioFormat::Opus => ogg_opus(pcm, rate).map_err(fail),
        AudioFormat::Flac => flac(pcm, rate).map_err(fail),
    }
}

fn mp3(pcm: &[f32], rate: u32) -> Result<Vec<u8>, String> {
    use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, MonoPcm, Quality};
    let mut b = Builder::new().ok_or("LAME could not start")?;
    b.set_num_channels(1).map_err(|e| format!("{e:?}"))?;
    b.set_sample_rate(rate).map_err(|e| format!("{e:?}"))?;
    b.set_brate(Bitrate::Kbps64).map_err(|e| format!("{e:?}"))?;
    b.set_quality(Quality::Good).map_err(|e| format!("{e:?}"))?;
    let mut enc = b.build().map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(pcm.len()));
    enc.encode_to_vec(MonoPcm(pcm), &mut out)
        .map_err(|e| format!("{e:?}"))?;
    out.reserve(7200);
    enc.flush_to_vec::<FlushNoGap>(&mut out)
        .map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

fn flac(pcm: &[f32], rate: u32) -> Result<Vec<u8>, String> {
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;
    let samples: Vec<i32> = pcm
        .iter()
        .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i32)
        .collect();
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, e)| format!("{e:?}"))?;
    let source = flacenc::source::MemSource::from_samples(&samples, 1, 16, rate as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| format!("{e:?}"))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream.write(&mut sink).map_err(|e| format!("{e:?}"))?;
    Ok(sink.as_slice().to_vec())
}

/// Opus' rate inside Ogg, and its frame (20 ms).
const OPUS_RATE: u32 = 48_000;
const OPUS_FRAME: usize = 960;

/// RFC 7845: an `OpusHead` and an `OpusTags` page, then 20 ms packets; the last page's granule
/// position ends the audio where the samples end (the last frame is padded with silence).
fn ogg_opus(pcm: &[f32], rate: u32) -> Result<Vec<u8>, String> {
    use ogg::writing::{PacketWriteEndInfo as End, PacketWriter};
    let pcm = resample(pcm, rate, OPUS_RATE).map_err(|e| e.to_string())?;
    let mut enc = opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Voip)
        .map_err(|e| e.to_string())?;
    let pre_skip = enc.get_lookahead().map_err(|e| e.to_string())? as u16;
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(1);
    head.extend(pre_skip.to_le_bytes());
    head.extend(rate.to_le_bytes());
    head.extend([0, 0, 0]);
    let vendor = b"seesay";
    let mut tags = b"OpusTags".to_vec();
    tags.extend((vendor.len() as u32).to_le_bytes());
    tags.extend(vendor);
    tags.extend(0u32.to_le_bytes());
    let io = |e: std::io::Error| e.to_string();
    let mut w = PacketWriter::new(Vec::new());
    let serial = 0x005e_e5a7;
    w.write_packet(head, serial, End::EndPage, 0).map_err(io)?;
    w.write_packet(tags, serial, End::EndPage, 0).map_err(io)?;
    let frames = pcm.len().div_ceil(OPUS_FRAME).max(1);
    let mut buf = vec![0u8; 4000];
    for i in 0..frames {
        let mut frame =
            pcm[(i * OPUS_FRAME).min(pcm.len())..((i + 1) * OPUS_FRAME).min(pcm.len())].to_vec();
        frame.resize(OPUS_FRAME, 0.0);
        let n = enc
            .encode_float(&frame, &mut buf)
            .map_err(|e| e.to_string())?;
        let last = i + 1 == frames;
        let end = ((i + 1) * OPUS_FRAME).min(pcm.len().max(1));
        let granule = u64::from(pre_skip) + end as u64;
        let info = if last {
            End::EndStream
        } else {
            End::NormalPacket
        };
        w.write_packet(buf[..n].to_vec(), serial, info, granule)
            .map_err(io)?;
    }
    Ok(w.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::decode_bytes;

    fn tone(rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin())
            .collect()
    }

    #[test]
    fn names_parse_back_and_others_are_refused_naming_the_formats() {
        for f in AudioFormat::ALL {
            assert_eq!(AudioFormat::parse(f.name()).unwrap(), f);
        }
        let e = AudioFormat::parse("aac").unwrap_err().to_string();
        assert!(
            e.contains("\"aac\"") && e.contains("mp3, opus, flac"),
            "{e}"
        );
    }

    /// MP3 and WAV decode (with symphonia, as uploads are read) to about the input's length.
    #[test]
    fn mp3_and_wav_decode_to_the_input_length() {
        let pcm = tone(22_050, 1.5);
        for f in [AudioFormat::Mp3, AudioFormat::Wav] {
            let bytes = encode(f, &pcm, 22_050).unwrap();
            let back = decode_bytes(bytes, &format!("x.{f}"), 22_050).unwrap();
            let ratio = back.len() as f64 / pcm.len() as f64;
            assert!((0.9..1.15).contains(&ratio), "{f}: {ratio}");
        }
    }

    /// FLAC's STREAMINFO says the rate, 16 bits, mono and every sample. (symphonia 0.5 stops
    /// with "end of stream" on flacenc's files, which ffmpeg decodes whole: tests/serve_speech.rs.)
    #[test]
    fn flac_streaminfo_counts_every_sample() {
        let pcm = tone(22_050, 1.5);
        let bytes = encode(AudioFormat::Flac, &pcm, 22_050).unwrap();
        assert_eq!(&bytes[..4], b"fLaC");
        let v = u64::from_be_bytes(bytes[18..26].try_into().unwrap());
        assert_eq!(v >> 44, 22_050);
        assert_eq!((v >> 41) & 7, 0, "mono");
        assert_eq!((v >> 36) & 31, 15, "16 bits");
        assert_eq!(v & ((1 << 36) - 1), pcm.len() as u64);
    }

    #[test]
    fn ogg_opus_has_its_headers_and_ends_at_the_input_length() {
        let pcm = tone(16_000, 1.0);
        let bytes = encode(AudioFormat::Opus, &pcm, 16_000).unwrap();
        assert_eq!(&bytes[..4], b"OggS");
        assert_eq!(&bytes[28..36], b"OpusHead");
        // The last page's granule position (bytes 6..14 of its header): pre-skip + 48 kHz samples.
        let last = bytes.windows(4).rposition(|w| w == b"OggS").unwrap();
        let granule = u64::from_le_bytes(bytes[last + 6..last + 14].try_into().unwrap());
        let pre_skip = u64::from(u16::from_le_bytes([bytes[38], bytes[39]]));
        assert_eq!(granule - pre_skip, 48_000);
    }
}
