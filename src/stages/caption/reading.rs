//! A description that reads: a captioner's sentence and the text read in the same picture in,
//! one description out ("A photo that might show a street sign. Text in view: EMERGENCY /
//! EXIT"), so questions about signs, labels and screens can be answered from a frame.

use image::RgbImage;

use super::captioner::{CaptionError, Captioner};
use crate::stages::read::{self, Reader, TextLine};

/// A captioner whose descriptions end with the text in view.
pub struct ReadingCaptioner {
    inner: Box<dyn Captioner>,
    reader: Reader,
    max_chars: usize,
}

impl ReadingCaptioner {
    pub fn new(inner: Box<dyn Captioner>, reader: Reader, max_chars: usize) -> ReadingCaptioner {
        ReadingCaptioner {
            inner,
            reader,
            max_chars,
        }
    }
}

/// What comes before the text read in a description.
pub const TEXT_IN_VIEW: &str = "Text in view:";

/// The caption, then "Text in view: LINE1 / LINE2 ..." when anything was read (at most
/// `max_chars` of it); the caption alone otherwise.
pub fn combine(caption: &str, lines: &[TextLine], max_chars: usize) -> String {
    let text = read::summary(lines, max_chars);
    let caption = caption.trim();
    match (caption.is_empty(), text.is_empty()) {
        (_, true) => caption.to_string(),
        (true, false) => format!("{TEXT_IN_VIEW} {text}"),
        (false, false) => {
            let stop = if caption.ends_with(['.', '!', '?']) {
                ""
            } else {
                "."
            };
            format!("{caption}{stop} {TEXT_IN_VIEW} {text}")
        }
    }
}

impl Captioner for ReadingCaptioner {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError> {
        let caption = self.inner.caption(img)?;
        let lines = self.reader.read(img).map_err(CaptionError::inference)?;
        Ok(combine(&caption, &lines, self.max_chars))
    }

    fn describe(&self) -> String {
        format!("{} + PP-OCRv4 reading", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> TextLine {
        TextLine::plain(text)
    }

    #[test]
    fn text_read_follows_the_caption() {
        let lines = [line("EMERGENCY"), line("EXIT")];
        assert_eq!(
            combine("A photo that might show a street sign", &lines, 100),
            "A photo that might show a street sign. Text in view: EMERGENCY / EXIT"
        );
        assert_eq!(combine("A cat.", &[], 100), "A cat.");
        assert_eq!(combine("", &lines, 100), "Text in view: EMERGENCY / EXIT");
        let long = [line("a very long line of small print that goes on")];
        assert_eq!(
            combine("A page.", &long, 20),
            "A page. Text in view: a very long line of ..."
        );
    }
}
