//! Reading text (OCR): an RGB image in, the lines of text in it out, in reading order, each with
//! its box and confidence. PP-OCRv4 through onnxruntime: DB detection (`detect.rs`, on the image
//! and on a contrast-normalised copy, merged), the angle classifier and CTC recognition
//! (`recognise.rs`), spaces put back from the recogniser's frames and a word list (`words.rs`),
//! and the reading order (`order.rs`). No threads: the caller decides where it runs.

pub mod detect;
pub mod html;
pub mod order;
pub mod recognise;
pub mod words;

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use ort::session::Session;
use serde::{Deserialize, Serialize};

use self::detect::{DbParams, Quad};
use self::recognise::{Charset, SpaceRule};
use self::words::WordList;
use crate::host;
use crate::store::{ModelError, Store};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("cannot load OCR model {path}: {detail} (run `seesay models fetch pp-ocrv4`)")]
    Load { path: String, detail: String },
    #[error("cannot read the word list {path}: {detail} (run `seesay models fetch words-en`, or set read.words = \"\")")]
    Words { path: String, detail: String },
    #[error("reading text failed: {0}")]
    Inference(String),
    #[error("read.{name} = {value}: {why}")]
    Setting {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Runtime(#[from] super::RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

fn inference(e: impl std::fmt::Display) -> ReadError {
    ReadError::Inference(e.to_string())
}

/// Reading settings (the `[read]` section). Detection defaults are RapidOCR's `config.yaml`
/// (thresh, box_thresh, unclip_ratio), which ships with the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadConfig {
    /// Read the text in pictures: descriptions of frames and images then end with "Text in
    /// view: ...". `seesay read` reads whatever this says.
    pub enabled: bool,
    /// The OCR model: `pp-ocrv4` (from `seesay models list`), or a folder holding the same
    /// three .onnx files.
    pub model: String,
    /// Word list that splits fused English words (`ofgreyvalues`): a model name (`words-en`),
    /// a `word count` file, or empty for none.
    pub words: String,
    /// The detector sees the picture scaled so its longer side is at most this (small pictures
    /// are enlarged up to twice, towards it). Larger finds smaller print, and costs more.
    pub limit_side: u32,
    /// Probability above which a pixel of the detector's map is text.
    pub thresh: f32,
    /// Mean probability a box needs to be kept.
    pub box_thresh: f32,
    /// How much boxes grow around the text found (area x ratio / perimeter on each side).
    pub unclip_ratio: f32,
    /// Lines the recogniser is less sure of than this (mean character probability) are dropped
    /// (0.65: a lone "D" read into the fur of the bundled cat photo scored 0.53).
    pub min_confidence: f32,
    /// A line of a single character needs at least this (a lone "茶" was read at 0.78 into a
    /// lamp's flare on scikit-image's rocket photo).
    pub single_char_confidence: f32,
    /// Detect a second time on a contrast-normalised copy (finds lines in shadow and uneven
    /// light) and add the boxes the first pass missed.
    pub contrast_pass: bool,
    /// Lines the angle classifier finds likely upside down are read a second time, turned
    /// round, and the surer reading kept.
    pub angle_classifier: bool,
    /// A gap between two characters (centre to centre, in recogniser frames) at least this many
    /// times the line's median gap is a space the recogniser left out.
    pub space_gap_ratio: f32,
    /// ... and it must be at least this many frames longer than the median gap.
    pub space_min_extra: f32,
    /// onnxruntime threads (0: all cores, as the recogniser of speech takes them).
    pub threads: usize,
    /// Longest "Text in view" added to a description, in characters.
    pub describe_chars: usize,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            enabled: true,
            model: "pp-ocrv4".into(),
            words: "words-en".into(),
            limit_side: 960,
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.6,
            min_confidence: 0.65,
            single_char_confidence: 0.9,
            contrast_pass: true,
            angle_classifier: true,
            space_gap_ratio: 1.6,
            space_min_extra: 1.2,
            threads: 0,
            describe_chars: 300,
        }
    }
}

impl ReadConfig {
    pub fn check(&self) -> Result<(), ReadError> {
        let bad = |name, value: String, why| Err(ReadError::Setting { name, value, why });
        if !(64..=4096).contains(&self.limit_side) {
            return bad(
                "limit_side",
                self.limit_side.to_string(),
                "must be between 64 and 4096",
            );
        }
        for (name, v) in [
            ("thresh", self.thresh),
            ("box_thresh", self.box_thresh),
            ("min_confidence", self.min_confidence),
            ("single_char_confidence", self.single_char_confidence),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(name, v.to_string(), "must be between 0 and 1");
            }
        }
        if !(0.5..=4.0).contains(&self.unclip_ratio) {
            return bad(
                "unclip_ratio",
                self.unclip_ratio.to_string(),
                "must be between 0.5 and 4",
            );
        }
        if self.space_gap_ratio < 1.0 {
            return bad(
                "space_gap_ratio",
                self.space_gap_ratio.to_string(),
                "must be at least 1",
            );
        }
        Ok(())
    }

    fn db(&self) -> DbParams {
        DbParams {
            thresh: self.thresh,
            box_thresh: self.box_thresh,
            unclip_ratio: self.unclip_ratio,
            max_candidates: 1000,
        }
    }
}

/// One line of text read from a picture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextLine {
    pub text: String,
    /// Upright bounding box in the picture's pixels: `[x0, y0, x1, y1]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The four corners of the (possibly rotated) box: top left, top right, bottom right,
    /// bottom left.
    pub corners: Quad,
    /// Mean probability of the line's characters.
    pub confidence: f32,
}

#[cfg(test)]
impl TextLine {
    /// A line of `text` with no place in a picture, for tests of what is done with lines.
    pub(crate) fn plain(text: &str) -> TextLine {
        TextLine {
            text: text.into(),
            bbox: [0.0; 4],
            corners: [[0.0; 2]; 4],
            confidence: 0.9,
        }
    }
}

/// Where the time of one `read` went, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadTimings {
    pub detect_s: f64,
    pub recognise_s: f64,
    pub boxes: usize,
}

/// The three model files of a PP-OCR folder.
const FILES: [&str; 3] = [
    "ch_PP-OCRv4_det_infer.onnx",
    "ch_PP-OCRv4_rec_infer.onnx",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx",
];

/// PP-OCRv4: detector, recogniser (with its character list) and angle classifier.
pub struct Reader {
    det: Session,
    rec: Session,
    cls: Session,
    charset: Charset,
    words: Option<WordList>,
    cfg: ReadConfig,
}

fn session(path: &Path, threads: usize) -> Result<Session, ReadError> {
    let fail = |detail: String| ReadError::Load {
        path: path.display().to_string(),
        detail,
    };
    host::onnxruntime_loaded().map_err(|e| fail(e.to_string()))?;
    crate::stages::varying_inputs(threads)
        .and_then(|mut b| b.commit_from_file(path))
        .map_err(|e| fail(e.to_string()))
}

impl Reader {
    /// Finds the configured models (and loads onnxruntime: `onnxruntime` is the
    /// `tts.onnxruntime` setting) and loads them.
    pub fn open(cfg: &ReadConfig, onnxruntime: &str, store: &Store) -> Result<Reader, ReadError> {
        cfg.check()?;
        super::load_onnxruntime(onnxruntime, store)?;
        let dir = match store.manifest.get(&cfg.model) {
            Ok(_) => store
                .resolve(&cfg.model)?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Err(_) => host::expand_home(&cfg.model),
        };
        let words = match cfg.words.as_str() {
            "" => None,
            w => {
                let path = store.resolve(w)?;
                Some(WordList::load(&path).map_err(|e| ReadError::Words {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?)
            }
        };
        Reader::load(&dir, words, cfg)
    }

    /// Loads the three models from `dir`; onnxruntime must have been loaded.
    pub fn load(
        dir: &Path,
        words: Option<WordList>,
        cfg: &ReadConfig,
    ) -> Result<Reader, ReadError> {
        let threads = host::thread_count(cfg.threads, host::Budget::machine().asr);
        let path = |i: usize| -> PathBuf { dir.join(FILES[i]) };
        let det = session(&path(0), threads)?;
        let rec = session(&path(1), threads)?;
        let cls = session(&path(2), threads)?;
        let list = rec
            .metadata()
            .ok()
            .and_then(|m| m.custom("character"))
            .ok_or_else(|| ReadError::Load {
                path: path(1).display().to_string(),
                detail: "the recogniser has no `character` list in its metadata".into(),
            })?;
        Ok(Reader {
            det,
            rec,
            cls,
            charset: Charset::from_metadata(&list),
            words,
            cfg: cfg.clone(),
        })
    }

    /// The lines of text in `img`, in reading order.
    pub fn read(&mut self, img: &RgbImage) -> Result<Vec<TextLine>, ReadError> {
        Ok(self.read_timed(img)?.0)
    }

    /// `read`, with the time detection and recognition took.
    pub fn read_timed(
        &mut self,
        img: &RgbImage,
    ) -> Result<(Vec<TextLine>, ReadTimings), ReadError> {
        let t = Instant::now();
        let mut found = self.detect(img)?;
        if self.cfg.contrast_pass {
            let radius = (img.width().max(img.height()) / 24).max(8);
            let second = self.detect(&detect::normalise_contrast(img, radius))?;
            let (first_n, second_n) = (found.len(), second.len());
            found = detect::merge(found, second, 0.5);
            tracing::debug!(first_n, second_n, merged = found.len(), "text boxes");
        }
        let detect_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let quads: Vec<Quad> = found.into_iter().map(|(q, _)| q).collect();
        let lines = self.recognise(img, &quads)?;
        let timings = ReadTimings {
            detect_s,
            recognise_s: t.elapsed().as_secs_f64(),
            boxes: quads.len(),
        };
        Ok((lines, timings))
    }

    /// Text boxes in `img`, with their scores.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<(Quad, f32)>, ReadError> {
        let (data, h, w) = detect::prepare(img, self.cfg.limit_side);
        let x =
            ort::value::Tensor::<f32>::from_array(([1usize, 3, h, w], data)).map_err(inference)?;
        let out = self.det.run(ort::inputs![x]).map_err(inference)?;
        let (shape, prob) = out[0].try_extract_tensor::<f32>().map_err(inference)?;
        let (mh, mw) = (
            shape[shape.len() - 2] as usize,
            shape[shape.len() - 1] as usize,
        );
        if prob.len() < mh * mw {
            return Err(inference("the detector's map is smaller than its shape"));
        }
        Ok(detect::boxes(
            prob,
            mw,
            mh,
            img.width(),
            img.height(),
            &self.cfg.db(),
        ))
    }

    /// Reads the text in each box; lines with no text or too little confidence are dropped,
    /// the rest come back in reading order.
    pub fn recognise(
        &mut self,
        img: &RgbImage,
        quads: &[Quad],
    ) -> Result<Vec<TextLine>, ReadError> {
        let crops: Vec<RgbImage> = quads.iter().map(|q| recognise::crop(img, q)).collect();
        let mut texts = self.recognise_crops(&crops)?;
        if self.cfg.angle_classifier {
            self.try_upside_down(&crops, &mut texts)?;
        }
        let mut lines: Vec<TextLine> = quads
            .iter()
            .zip(texts)
            .filter(|(_, (text, conf))| self.keep(text, *conf))
            .map(|(q, (text, confidence))| TextLine {
                text: match &self.words {
                    Some(w) => w.respace(&words::space_after_stops(&text)),
                    None => words::space_after_stops(&text),
                },
                bbox: detect::bounds(q),
                corners: *q,
                confidence,
            })
            .collect();
        let boxes: Vec<[f32; 4]> = lines.iter().map(|l| l.bbox).collect();
        let order = order::reading_order(&boxes);
        let mut slots: Vec<Option<TextLine>> = lines.drain(..).map(Some).collect();
        Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
    }

    /// Whether a reading is sure enough to report.
    fn keep(&self, text: &str, confidence: f32) -> bool {
        match text.chars().count() {
            0 => false,
            1 => confidence >= self.cfg.single_char_confidence.max(self.cfg.min_confidence),
            _ => confidence >= self.cfg.min_confidence,
        }
    }

    /// Reads again, turned round, the crops the angle classifier thinks more likely upside down
    /// than not, and keeps whichever reading the recogniser is surer of. The classifier alone is
    /// not trusted: it gives 0.86 for "upside down" to some long upright lines.
    fn try_upside_down(
        &mut self,
        crops: &[RgbImage],
        texts: &mut [(String, f32)],
    ) -> Result<(), ReadError> {
        let mut suspects = Vec::new();
        for (c, chunk) in crops.chunks(8).enumerate() {
            let refs: Vec<&RgbImage> = chunk.iter().collect();
            let data = recognise::batch(&refs, recognise::CLS_W);
            let shape = [chunk.len(), 3, recognise::LINE_H as usize, recognise::CLS_W];
            let x = ort::value::Tensor::<f32>::from_array((shape, data)).map_err(inference)?;
            let out = self.cls.run(ort::inputs![x]).map_err(inference)?;
            let (_, p) = out[0].try_extract_tensor::<f32>().map_err(inference)?;
            suspects.extend(
                (0..chunk.len())
                    .filter(|&i| p.get(i * 2 + 1).is_some_and(|&up| up > 0.5))
                    .map(|i| c * 8 + i)
                    // A line read with confidence is the right way up, whatever the classifier says.
                    .filter(|&i| texts[i].1 < 0.9),
            );
        }
        if suspects.is_empty() {
            return Ok(());
        }
        let turned: Vec<RgbImage> = suspects
            .iter()
            .map(|&i| imageproc::geometric_transformations::rotate180(&crops[i]))
            .collect();
        let again = self.recognise_crops(&turned)?;
        for (&i, alt) in suspects.iter().zip(again) {
            if alt.1 > texts[i].1 {
                texts[i] = alt;
            }
        }
        Ok(())
    }

    /// The recogniser on crops of similar widths together (six at a time).
    fn recognise_crops(&mut self, crops: &[RgbImage]) -> Result<Vec<(String, f32)>, ReadError> {
        let mut idx: Vec<usize> = (0..crops.len()).collect();
        idx.sort_by_key(|&i| recognise::scaled_width(&crops[i]));
        let mut out = vec![(String::new(), 0.0); crops.len()];
        let rule = SpaceRule {
            gap_ratio: self.cfg.space_gap_ratio,
            min_extra: self.cfg.space_min_extra,
        };
        for chunk in idx.chunks(6) {
            let refs: Vec<&RgbImage> = chunk.iter().map(|&i| &crops[i]).collect();
            let widest = refs.iter().map(|c| recognise::scaled_width(c)).max();
            let width = widest
                .unwrap_or(0)
                .clamp(recognise::MIN_REC_W, recognise::MAX_REC_W)
                .div_ceil(recognise::FRAME_PX)
                * recognise::FRAME_PX;
            let data = recognise::batch(&refs, width);
            let shape = [chunk.len(), 3, recognise::LINE_H as usize, width];
            let x = ort::value::Tensor::<f32>::from_array((shape, data)).map_err(inference)?;
            let res = self.rec.run(ort::inputs![x]).map_err(inference)?;
            let (shape, probs) = res[0].try_extract_tensor::<f32>().map_err(inference)?;
            let (frames, classes) = (shape[1] as usize, shape[2] as usize);
            for (n, &i) in chunk.iter().enumerate() {
                let valid = recognise::scaled_width(&crops[i])
                    .min(width)
                    .div_ceil(recognise::FRAME_PX)
                    + 1;
                let line = &probs[n * frames * classes..(n + 1) * frames * classes];
                out[i] = recognise::decode(line, frames, classes, valid, &self.charset, &rule);
            }
        }
        Ok(out)
    }
}

/// The text of `lines` for a description: "LINE1 / LINE2 ...", cut at a word boundary near
/// `max_chars` (with "...").
pub fn summary(lines: &[TextLine], max_chars: usize) -> String {
    let joined = lines
        .iter()
        .map(|l| l.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let cut: String = joined.chars().take(max_chars).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > max_chars / 2 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{} ...", cut.trim_end_matches([' ', '/']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> TextLine {
        TextLine::plain(text)
    }

    #[test]
    fn summaries_join_lines_and_stop_at_a_word() {
        let lines = [line("EMERGENCY"), line("EXIT")];
        assert_eq!(summary(&lines, 100), "EMERGENCY / EXIT");
        let long = [line("one two three four five six seven")];
        assert_eq!(summary(&long, 16), "one two three ...");
    }

    #[test]
    fn the_defaults_pass_their_own_check() {
        assert!(ReadConfig::default().check().is_ok());
        let bad = ReadConfig {
            box_thresh: 1.5,
            ..ReadConfig::default()
        };
        assert!(bad.check().is_err());
    }
}
