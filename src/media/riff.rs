//! RIFF/WAVE headers looked at before the decoder (symphonia) reads them, where it would panic.

/// Checks every WAV format chunk symphonia's probe could find (it looks for a RIFF header
/// anywhere in the first megabyte) before symphonia reads it: symphonia panics on a rate or a
/// channel count of 0 (found by fuzzing). Other files pass untouched. Leaves the source at its
/// start.
pub(crate) fn check_wav_header(
    source: &mut Box<dyn symphonia::core::io::MediaSource>,
) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut head = Vec::new();
    let read = source
        .by_ref()
        .take((1 << 20) + 4096)
        .read_to_end(&mut head);
    source.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    read.map_err(|e| e.to_string())?;
    let starts = head
        .windows(12)
        .enumerate()
        .filter(|(_, w)| &w[..4] == b"RIFF" && &w[8..] == b"WAVE")
        .map(|(i, _)| i + 12);
    for mut at in starts {
        while at + 8 <= head.len() {
            let size = u32::from_le_bytes(head[at + 4..at + 8].try_into().expect("4 bytes"));
            if &head[at..at + 4] == b"fmt " {
                if at + 24 <= head.len() {
                    let u16_at = |i: usize| u16::from_le_bytes([head[at + i], head[at + i + 1]]);
                    let channels = u16_at(10);
                    let rate =
                        u32::from_le_bytes(head[at + 12..at + 16].try_into().expect("4 bytes"));
                    let (block_align, bits) = (u16_at(20), u16_at(22));
                    if channels == 0 || rate == 0 || block_align == 0 || bits == 0 {
                        return Err(format!(
                            "a damaged WAV header ({channels} channels, {rate} Hz, {bits} bits, {block_align}-byte frames)"
                        ));
                    }
                }
                break;
            }
            at = at
                .saturating_add(8)
                .saturating_add(size as usize + (size as usize & 1));
        }
    }
    Ok(())
}
