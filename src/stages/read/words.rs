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
/// Two words are joined when the word they make is this much likelier (ln 1000) than the two
/// apart: `sum mary` (39,000 times) and `in formation` (3,400) are joined; `every day` (100),
/// `him self` (870) and `in to` (2) stay apart.
const JOIN_ODDS: f32 = 6.9;

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
        let pieces: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
        let mut tokens: Vec<String> = Vec::new();
        let mut i = 0;
        while i < pieces.len() {
            let run = (2..=3)
                .rev()
                .find(|&n| i + n <= pieces.len() && self.should_join(&pieces[i..i + n]))
                .unwrap_or(1);
            tokens.push(pieces[i..i + run].concat());
            i += run;
        }
        let mut words: Vec<String> = tokens.iter().map(|t| self.split_token(t)).collect();
        self.resegment_pairs(&mut words);
        words.join(" ")
    }

    /// A piece that is no word, with its neighbour, split afresh (`them orning` -> `the
    /// morning`) when the two together split into known words. Punctuation may only follow the
    /// second.
    fn resegment_pairs(&self, words: &mut Vec<String>) {
        let letters = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic());
        let mut i = 1;
        while i < words.len() {
            let (a, b) = (&words[i - 1], &words[i]);
            let (sb, eb) = core(b);
            let wb = &b[..eb];
            let fits = sb == 0
                && letters(a)
                && letters(wb)
                && wb.chars().all(|c| c.is_ascii_lowercase())
                && (!self.contains(a) || !self.contains(wb));
            let whole = format!("{a}{b}");
            let cuts = fits
                .then(|| self.segment(&whole[..a.len() + eb].to_ascii_lowercase()))
                .flatten()
                .filter(|c| c.len() > 1);
            if let Some(cuts) = cuts {
                let mut parts = Vec::new();
                let mut at = 0;
                for (k, &end) in cuts.iter().enumerate() {
                    let stop = if k + 1 == cuts.len() {
                        whole.len()
                    } else {
                        end
                    };
                    parts.push(whole[at..stop].to_string());
                    at = end;
                }
                let n = parts.len();
                words.splice(i - 1..=i, parts);
                i += n - 1;
            } else {
                i += 1;
            }
        }
    }

    /// Pieces of one word cut by gaps (`se gm entation`): letters only (punctuation before the
    /// first and after the last), later pieces in lower case, together a word, and either at
    /// least one piece no word or two words that together are a far likelier word.
    fn should_join(&self, pieces: &[&str]) -> bool {
        let last = pieces.len() - 1;
        let mut cores = Vec::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            let (s, e) = core(p);
            let w = &p[s..e];
            let clean = (i == 0 || s == 0) && (i == last || e == p.len());
            if w.is_empty() || !clean || !w.chars().all(|c| c.is_ascii_alphabetic()) {
                return false;
            }
            if i > 0 && w.starts_with(|c: char| c.is_ascii_uppercase()) {
                return false;
            }
            cores.push(w);
        }
        let Some(&joined) = self.cost.get(&cores.concat().to_lowercase()) else {
            return false;
        };
        let cost = |w: &str| self.cost.get(&w.to_lowercase()).copied();
        match cores.iter().map(|w| cost(w)).collect::<Option<Vec<f32>>>() {
            None => true,
            // Two words that make a far likelier word (`sum mary`): a gap misread as a space.
            Some(c) => c.len() == 2 && c.iter().sum::<f32>() - joined > JOIN_ODDS,
        }
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
        if let Some(cut) = capital_inside(word).filter(|_| !self.contains(word)) {
            // `focacciaonFriday`: a capital after a lower-case letter starts a new word where
            // what comes before it is fused words or a small word (`onFriday`) — the recogniser
            // dropped a space; `JavaScript` and `YouTube` (a word before the capital) stay whole.
            let (a, b) = (s + cut, &token[s + cut..]);
            let left = self.split_token(&token[..a]);
            if left.contains(' ')
                || SMALL_WORDS.contains(&word[..cut].to_ascii_lowercase().as_str())
            {
                return format!("{left} {}", self.split_token(b));
            }
        }
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

/// Words the recogniser fuses onto a capitalised word after them (`onFriday`, `theMenu`).
const SMALL_WORDS: &[&str] = &[
    "a", "an", "and", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with",
];

/// Where a capital follows a lower-case letter that follows another (`onFriday`, not
/// `McDonald` or `iPhone`), in a word of letters only.
fn capital_inside(word: &str) -> Option<usize> {
    let b = word.as_bytes();
    if !b.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    (2..b.len()).find(|&i| {
        b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase() && b[i - 2].is_ascii_lowercase()
    })
}

/// A space after a full stop, question or exclamation mark between a lower-case letter and a
/// capital (`weekdays.Books`), and after a comma, colon or semicolon between two letters
/// (`red,green`): the recogniser drops these like the others. `np.zeros` and `U.S.A` stay.
pub fn space_after_stops(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        out.push(c);
        let (Some(&prev), Some(&next)) = (
            i.checked_sub(1).and_then(|p| chars.get(p)),
            chars.get(i + 1),
        ) else {
            continue;
        };
        let sentence = matches!(c, '.' | '!' | '?') && prev.is_lowercase() && next.is_uppercase();
        let clause = matches!(c, ',' | ';' | ':') && prev.is_alphabetic() && next.is_alphabetic();
        if sentence || clause {
            out.push(' ');
        }
    }
    out
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
             segmentation 5\nse 3\nin 500\nthem 90\nmorning 40\nopening 30\nhours 35\npen 20\nhour 30\ns 1\nsegment 10\nation 1\nsum 2\nmary 2\nsummary 50\nevery 200\nday 400\neveryday 10\n",
        )
    }

    #[test]
    fn fused_words_are_split_into_the_likeliest_words() {
        let w = list();
        assert_eq!(w.respace("ofgreyvalues"), "of grey values");
        assert_eq!(w.respace("Openinghours:"), "Opening hours:");
        assert_eq!(
            w.respace("Region-basedsegmentation"),
            "Region-based segmentation"
        );
        assert_eq!(w.respace("(basedsegmentation)"), "(based segmentation)");
        // A capital inside starts a word; names like McDonald stay whole.
        assert_eq!(
            w.respace("ThemorningofgreyValues"),
            "The morning of grey Values"
        );
        assert_eq!(w.respace("ofgreyValues."), "of grey Values.");
        assert_eq!(w.respace("greyvaluesinMorning"), "grey values in Morning");
        assert_eq!(w.respace("inMorning"), "in Morning");
        assert_eq!(w.respace("McDonald"), "McDonald");
        assert_eq!(
            w.respace("JavaScript and YouTube"),
            "JavaScript and YouTube"
        );
        // Known words, unknown words, numbers and capitals stay as they are.
        assert_eq!(w.respace("segmentation"), "segmentation");
        assert_eq!(
            w.respace("Xylophones 2024 GREYVALUES"),
            "Xylophones 2024 GREYVALUES"
        );
    }

    #[test]
    fn stops_get_their_space_back() {
        assert_eq!(
            space_after_stops("weekdays.Books may be red,green"),
            "weekdays. Books may be red, green"
        );
        assert_eq!(
            space_after_stops("np.zeros_like U.S.A 3.5 a:"),
            "np.zeros_like U.S.A 3.5 a:"
        );
    }

    #[test]
    fn a_word_cut_in_two_is_joined() {
        let w = list();
        assert_eq!(w.respace("segm entation of"), "segmentation of");
        assert_eq!(w.respace("(se gm entation)"), "(segmentation)");
        assert_eq!(w.respace("in them orning"), "in the morning");
        // Two words stay two words, unless together they are a far likelier word.
        assert_eq!(w.respace("grey values"), "grey values");
        assert_eq!(w.respace("every day"), "every day");
        assert_eq!(w.respace("the sum mary."), "the summary.");
    }
}
