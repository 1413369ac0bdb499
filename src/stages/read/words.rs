//! Spaces from a word list: a line of text in, the same line with fused English words split
//! (`ofgreyvalues` -> `of grey values`) and words wrongly cut in two joined again, out.
//!
//! The list is SymSpell's English frequency dictionary (`word count` per line). A token is only
//! split when it is not a word itself and every piece is one; the split chosen is the likeliest
//! (the least total -log frequency, as in Peter Norvig's and wordninja's segmenters).

use std::collections::HashMap;
use std::path::Path;

/// The longest word looked for inside a fused token.
const MAX_WORD: usize = 24;
/// Tokens shorter than this are left alone.
const MIN_SPLIT: usize = 5;

/// English words and the cost of each (-ln of its share of all counts).
#[derive(Debug, Clone, Default)]
pub struct WordList {
    cost: HashMap<String, f32>,
}

impl WordList {
    /// Reads `word count` lines (SymSpell's dictionary format).
    pub fn load(path: &Path) -> std::io::Result<WordList> {
        Ok(WordList::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> WordList {
        let pairs: Vec<(&str, f64)> = text
            .lines()
            .filter_map(|l| {
                let (w, n) = l.split_once(char::is_whitespace)?;
                Some((w, n.trim().parse::<f64>().ok()?))
            })
            .collect();
        let total: f64 = pairs.iter().map(|p| p.1).sum::<f64>().max(1.0);
        let cost = pairs
            .into_iter()
            .map(|(w, n)| (w.to_lowercase(), -((n / total).ln()) as f32))
            .collect();
        WordList { cost }
    }

    pub fn len(&self) -> usize {
        self.cost.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cost.is_empty()
    }

    pub fn contains(&self, word: &str) -> bool {
        self.cost.contains_key(&word.to_lowercase())
    }

    /// The line with fused words split and split words joined.
    pub fn respace(&self, line: &str) -> String {
        let mut tokens: Vec<String> = Vec::new();
        for t in line.split(' ').filter(|t| !t.is_empty()) {
            match tokens.last_mut() {
                Some(prev) if self.should_join(prev, t) => prev.push_str(t),
                _ => tokens.push(t.to_string()),
            }
        }
        tokens
            .iter()
            .map(|t| self.split_token(t))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Two pieces of one word cut by a gap: letters only, at least one of them no word, and
    /// together a word.
    fn should_join(&self, a: &str, b: &str) -> bool {
        let (ca, cb) = (core(a), core(b));
        if ca.1 != a.len() || cb.0 != 0 || ca.0 == ca.1 || cb.0 == cb.1 {
            return false;
        }
        let (wa, wb) = (&a[ca.0..ca.1], &b[cb.0..cb.1]);
        let letters = |w: &str| w.chars().all(|c| c.is_ascii_alphabetic());
        if !letters(wa) || !letters(wb) || wb.starts_with(|c: char| c.is_ascii_uppercase()) {
            return false;
        }
        (!self.contains(wa) || !self.contains(wb)) && self.contains(&format!("{wa}{wb}"))
    }

    /// A token's letters split into words where it is no word itself; punctuation around it
    /// stays where it was.
    fn split_token(&self, token: &str) -> String {
        if token.contains('-') {
            let parts: Vec<String> = token.split('-').map(|p| self.split_token(p)).collect();
            return parts.join("-");
        }
        let (s, e) = core(token);
        let word = &token[s..e];
        let fused = word.len() >= MIN_SPLIT
            && word.chars().all(|c| c.is_ascii_alphabetic())
            && word.chars().skip(1).all(|c| c.is_ascii_lowercase())
            && !self.contains(word);
        if !fused {
            return token.to_string();
        }
        match self.segment(&word.to_ascii_lowercase()) {
            Some(cuts) if cuts.len() > 1 => {
                let mut out = token[..s].to_string();
                let mut at = 0;
                for (i, end) in cuts.into_iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(&word[at..end]);
                    at = end;
                }
                out.push_str(&token[e..]);
                out
            }
            _ => token.to_string(),
        }
    }

    /// The likeliest split of `w` into known words, as the end offsets of the pieces; `None`
    /// when no split into known words exists.
    fn segment(&self, w: &str) -> Option<Vec<usize>> {
        let n = w.len();
        let mut best: Vec<Option<(f32, usize)>> = vec![None; n + 1];
        best[0] = Some((0.0, 0));
        for end in 1..=n {
            for start in end.saturating_sub(MAX_WORD)..end {
                let (Some((base, _)), Some(&c)) = (best[start], self.cost.get(&w[start..end]))
                else {
                    continue;
                };
                let total = base + c;
                if best[end].is_none_or(|(b, _)| total < b) {
                    best[end] = Some((total, start));
                }
            }
        }
        best[n]?;
        let mut cuts = Vec::new();
        let mut end = n;
        while end > 0 {
            cuts.push(end);
            end = best[end].expect("reached").1;
        }
        cuts.reverse();
        Some(cuts)
    }
}

/// The byte range of a token without the punctuation around it.
fn core(token: &str) -> (usize, usize) {
    let start = token
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric())
        .map_or(token.len(), |(i, _)| i);
    let end = token
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_alphanumeric())
        .map_or(start, |(i, c)| i + c.len_utf8());
    (start, end.max(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> WordList {
        WordList::parse(
            "the 1000\nof 900\na 800\ngrey 50\nvalues 60\nvalue 70\nregion 40\nbased 45\n\
             segmentation 5\nopening 30\nhours 35\npen 20\nhour 30\ns 1\nsegment 10\nation 1\n",
        )
    }

    #[test]
    fn fused_words_are_split_into_the_likeliest_words() {
        let w = list();
        assert_eq!(w.respace("ofgreyvalues"), "of grey values");
        assert_eq!(w.respace("Openinghours:"), "Opening hours:");
        assert_eq!(w.respace("Region-basedsegmentation"), "Region-based segmentation");
        assert_eq!(w.respace("(basedsegmentation)"), "(based segmentation)");
        // Known words, unknown words, numbers and capitals stay as they are.
        assert_eq!(w.respace("segmentation"), "segmentation");
        assert_eq!(w.respace("Xylophones 2024 GREYVALUES"), "Xylophones 2024 GREYVALUES");
    }

    #[test]
    fn a_word_cut_in_two_is_joined() {
        let w = list();
        assert_eq!(w.respace("segm entation of"), "segmentation of");
        // Two words stay two words.
        assert_eq!(w.respace("grey values"), "grey values");
    }
}
