//! The sentence splitter: streamed text chunks (words, as the language model writes them) in,
//! speakable pieces out as soon as each is complete. The first piece of an answer may be its first
//! clause, so that speech starts before the first sentence is finished.

/// Cuts text into sentences at `.`, `!`, `?` (and line breaks) followed by a space or the end.
/// Decimal points, "e.g." and common titles do not end a sentence.
pub fn split_sentences(text: &str) -> Vec<String> {
    const TITLES: [&str; 9] = [
        "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "e.g.", "i.e.", "etc.",
    ];
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cur = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            cur.push(c);
            let at_break = matches!(c, '.' | '!' | '?' | '…')
                && chars.peek().is_none_or(|n| n.is_whitespace());
            if !at_break {
                continue;
            }
            // Swallow runs like "?!" or "...".
            while let Some(&n) = chars.peek() {
                if matches!(n, '.' | '!' | '?' | '"' | '\'' | ')') {
                    cur.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let last_word = cur.split_whitespace().last().unwrap_or("").to_lowercase();
            if c == '.' && TITLES.contains(&last_word.as_str()) {
                continue;
            }
            push_trimmed(&mut out, &cur);
            cur.clear();
        }
        push_trimmed(&mut out, &cur);
    }
    out
}

/// Whether a piece ends its sentence (before any closing quote or bracket), rather than being a
/// clause or phrase cut early.
pub fn ends_sentence(piece: &str) -> bool {
    piece
        .trim_end_matches(['"', '\'', ')'])
        .ends_with(['.', '!', '?', '…'])
}

fn push_trimmed(out: &mut Vec<String>, s: &str) {
    let t = s.trim();
    if t.chars().any(char::is_alphanumeric) {
        out.push(t.to_string());
    }
}

/// Cuts a sentence into clauses at punctuation followed by a space or the end; each clause comes
/// with the punctuation mark that closed it.
pub fn split_clauses(sentence: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sentence.chars().peekable();
    while let Some(c) = chars.next() {
        let closes = matches!(c, ',' | ';' | ':' | '.' | '!' | '?' | '—')
            && chars.peek().is_none_or(|n| n.is_whitespace());
        if closes {
            let p = if c == '—' { ',' } else { c };
            if cur.chars().any(char::is_alphanumeric) {
                out.push((cur.trim().to_string(), Some(p)));
            } else if let Some(last) = out.last_mut() {
                last.1 = Some(p);
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if cur.chars().any(char::is_alphanumeric) {
        out.push((cur.trim().to_string(), None));
    }
    out
}

/// Words before which a speaker breathes: a long opening may be cut there.
const JOINS: [&str; 9] = [
    "and", "but", "or", "so", "because", "which", "while", "when", "although",
];

/// Words that begin a sentence's second phrase: where its subject meets its verb ("The capital
/// of Italy | is Rome.", "Fifteen plus twenty-seven | equals forty-two.") or a place or time
/// follows ("There are sixty minutes | in an hour."). Prepositions that bind to the word before
/// ("of", "by") are not among them.
const PHRASE_STARTS: [&str; 11] = [
    "is", "are", "was", "were", "has", "have", "had", "equals", "can", "will", "in",
];

/// Cuts a stream of text into sentences.
#[derive(Debug)]
pub struct SentenceSplitter {
    buf: String,
    /// Emit the first clause early when it has at least this many words (0: never).
    first_clause_words: usize,
    emitted: usize,
}

impl SentenceSplitter {
    pub fn new(first_clause_words: usize) -> SentenceSplitter {
        SentenceSplitter {
            buf: String::new(),
            first_clause_words,
            emitted: 0,
        }
    }

    /// Adds a chunk; returns the pieces it completed.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.buf.push_str(chunk);
        let mut out = Vec::new();
        if self.emitted == 0 && self.first_clause_words > 0 {
            if let Some(clause) = self.early_clause() {
                out.push(clause);
            }
        }
        // Chunks end at word boundaries. A sentinel word after the buffer shows which sentences
        // are closed: if it stands alone, everything before it is complete.
        if self.buf.ends_with(char::is_whitespace) {
            let mut pieces = split_sentences(&format!("{}Z", self.buf));
            let open = match pieces.pop() {
                Some(last) if last == "Z" => String::new(),
                Some(last) => last.strip_suffix('Z').unwrap_or(&last).to_string(),
                None => String::new(),
            };
            if !pieces.is_empty() {
                self.buf = open;
                out.extend(pieces);
            }
        }
        self.emitted += out.len();
        out
    }

    /// The rest of the text, at the end of the stream.
    pub fn finish(&mut self) -> Vec<String> {
        let rest = std::mem::take(&mut self.buf);
        let out = split_sentences(&rest);
        self.emitted += out.len();
        out
    }

    fn early_clause(&mut self) -> Option<String> {
        let punct = self.buf.match_indices([',', ';', ':']).find_map(|(i, _)| {
            let closes = self.buf[i + 1..].starts_with(char::is_whitespace); // not "1,000"
            let clause = &self.buf[..=i];
            let long_enough = clause.split_whitespace().count() >= self.first_clause_words;
            (closes && long_enough).then_some(i + 1)
        });
        // Without punctuation, a long opening is cut before a conjunction ("... the United
        // States | and has been ..."), where a speaker would breathe anyway, or where its subject
        // meets its verb ("The capital of Italy | is Rome."): a phrase Piper says well on its
        // own, spoken while the rest is written.
        let n = self.first_clause_words;
        let cut = punct
            .or_else(|| self.before_word(&JOINS, n + 2))
            .or_else(|| self.before_word(&PHRASE_STARTS, n))?;
        let clause = self.buf[..cut].trim().to_string();
        if clause.contains(['.', '!', '?']) {
            return None; // a whole sentence came first; the sentence rule handles it
        }
        self.buf = self.buf[cut..].trim_start().to_string();
        Some(clause)
    }

    /// Byte offset of one of `words` that follows at least `after` words, in the complete words
    /// of the buffer.
    fn before_word(&self, words: &[&str], after: usize) -> Option<usize> {
        let complete = self.buf.rfind(char::is_whitespace)?;
        let mut count = 0;
        let mut start = None;
        for (i, c) in self.buf[..complete + 1].char_indices() {
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    let word = &self.buf[s..i];
                    if count >= after && words.contains(&word) {
                        return Some(s);
                    }
                    count += 1;
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut SentenceSplitter, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for w in text.split_inclusive(' ') {
            out.extend(s.push(w));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_come_out_when_complete() {
        let mut s = SentenceSplitter::new(0);
        assert!(s.push("Dr. ").is_empty());
        assert!(s.push("Smith paid 3.50 ").is_empty());
        assert_eq!(s.push("dollars. "), vec!["Dr. Smith paid 3.50 dollars."]);
        assert!(s.push("Then ").is_empty());
        assert!(s.push("he left").is_empty());
        assert_eq!(s.finish(), vec!["Then he left"]);
    }

    #[test]
    fn a_long_opening_is_cut_before_a_conjunction() {
        let mut s = SentenceSplitter::new(4);
        let out = feed(
            &mut s,
            "A friend of mine from the United States and his wife came over. And so on. ",
        );
        assert_eq!(
            out,
            vec![
                "A friend of mine from the United States",
                "and his wife came over.",
                "And so on."
            ]
        );
        // Short openings are left whole.
        let mut s = SentenceSplitter::new(4);
        assert_eq!(feed(&mut s, "Cats and dogs. "), vec!["Cats and dogs."]);
    }

    #[test]
    fn the_first_clause_may_go_early() {
        let mut s = SentenceSplitter::new(4);
        let out = feed(
            &mut s,
            "Well, the capital of France, as you know, is Paris. It has 1,000 bridges, maybe. ",
        );
        assert_eq!(
            out,
            vec![
                "Well, the capital of France,",
                "as you know, is Paris.",
                "It has 1,000 bridges, maybe."
            ]
        );
    }

    #[test]
    fn a_long_subject_is_spoken_before_its_verb() {
        let mut s = SentenceSplitter::new(4);
        let out = feed(&mut s, "The capital of Italy is Rome. It is old. ");
        assert_eq!(out, vec!["The capital of Italy", "is Rome.", "It is old."]);
        // Not before "of" or "by", not after fewer words, and not an "is" inside a longer word.
        let mut s = SentenceSplitter::new(4);
        let out = feed(&mut s, "One hundred divided by four equals twenty-five. ");
        assert_eq!(
            out,
            vec!["One hundred divided by four", "equals twenty-five."]
        );
        let mut s = SentenceSplitter::new(4);
        assert_eq!(
            feed(&mut s, "Spiders have eight legs. "),
            vec!["Spiders have eight legs."]
        );
        let mut s = SentenceSplitter::new(4);
        assert_eq!(
            feed(&mut s, "The big old island lies north. "),
            vec!["The big old island lies north."]
        );
    }

    #[test]
    fn sentences_split_at_real_ends_only() {
        let s = split_sentences("Dr. Smith paid 3.50 dollars. Really?! Yes... ok\nNew line here");
        assert_eq!(
            s,
            vec![
                "Dr. Smith paid 3.50 dollars.",
                "Really?!",
                "Yes...",
                "ok",
                "New line here"
            ]
        );
        assert!(split_sentences("  ...  ").is_empty());
    }

    #[test]
    fn sentence_ends_are_told_from_early_pieces() {
        for piece in ["Rome.", "Is it?", "(Really!)", "He said \"go.\"", "Well…"] {
            assert!(super::ends_sentence(piece), "{piece}");
        }
        for piece in ["The capital of Italy", "First,", "Seven times eight"] {
            assert!(!super::ends_sentence(piece), "{piece}");
        }
    }

    #[test]
    fn clauses_keep_their_punctuation() {
        let c = split_clauses("Hello world, this is a test; fine. ");
        assert_eq!(
            c,
            vec![
                ("Hello world".to_string(), Some(',')),
                ("this is a test".to_string(), Some(';')),
                ("fine".to_string(), Some('.')),
            ]
        );
        assert_eq!(split_clauses("1,000 people")[0].0, "1,000 people");
    }
}
