//! Text: whether speech heard during an answer means to interrupt it, the sentence splitter (streamed answer text in, speakable sentences and clauses out) and
//! transcripts (timed segments in, text / JSON / SRT / WebVTT out).

pub mod interrupt;
pub mod splitter;
pub mod transcript;
