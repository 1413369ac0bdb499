//! Does speech heard while seesay talks mean to interrupt it? Words do; a backchannel ("mm-hmm",
//! "yeah", "okay"), a filler or a cough (no words) does not, and neither does seesay's own voice
//! coming back through the microphone (words it is saying itself).

/// Sounds listeners make to say "go on", and fillers; they never interrupt.
const BACKCHANNEL: [&str; 24] = [
    "mm", "mmm", "mhm", "hm", "hmm", "mm-hmm", "mmhmm", "uh-huh", "uhhuh", "uh", "um", "ah", "oh",
    "yeah", "yes", "yep", "ok", "okay", "right", "sure", "i", "see", "cool", "nice",
];

/// Lowercase words, without the recogniser's notes on sounds ("(coughs)", "[MUSIC]", "*sighs*").
fn words(text: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut note: Option<char> = None;
    for c in text.chars() {
        match (note, c) {
            (None, '(') => note = Some(')'),
            (None, '[') => note = Some(']'),
            (None, '*') => note = Some('*'),
            (Some(end), c) if c == end => note = None,
            (Some(_), _) => {}
            (None, c) => plain.push(c),
        }
    }
    plain
        .split(|c: char| c.is_whitespace() || ",.!?;:\"()[]".contains(c))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Words too common to tell an echo from a question.
const SMALL: [&str; 40] = [
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by",
    "from", "as", "is", "are", "was", "were", "be", "it", "its", "that", "this", "what", "who",
    "how", "do", "does", "did", "you", "me", "my", "we", "they", "he", "she", "so", "not",
];

/// Could `word` be seesay saying one of `answer`'s words?
fn echo_of(word: &str, answer: &[String]) -> bool {
    let stem = |w: &str| w.chars().take(3).collect::<String>();
    answer.iter().any(|a| {
        a == word || (word.chars().count() >= 3 && a.chars().count() >= 3 && stem(a) == stem(word))
    })
}

/// Words that mean "stop" or start a request: one of them is enough to interrupt at once.
const PROMPT_WORDS: [&str; 20] = [
    "stop", "wait", "hold", "pause", "quiet", "enough", "cancel", "no", "sorry", "excuse", "what",
    "how", "why", "where", "when", "who", "which", "can", "could", "tell",
];

/// Is `meant` (what `meant` returned) sure enough to stop an answer before the speech has
/// ended? Two words that carry meaning, or one that asks or says stop; a single other word from
/// a fraction of a second of audio is often the recogniser guessing at a hum.
pub fn sure(meant: &str) -> bool {
    let words: Vec<&str> = meant.split_whitespace().collect();
    let content = words.iter().filter(|w| !SMALL.contains(w)).count();
    content >= 2 || words.iter().any(|w| PROMPT_WORDS.contains(w))
}

/// A backchannel or a filler, however the recogniser spells it ("Mmmm", "NMMM", "uhh", "Hmm",
/// "MAMMAM"): listed, a hum with a vowel in front, no vowel at all (no English word is spoken so;
/// the recogniser writes hums and murmurs that way), or a murmur of m, h and open vowels with
/// more m's than vowels.
fn is_filler(word: &str) -> bool {
    let w: String = word.chars().filter(|&c| c != '-').collect();
    let hums = |s: &str| !s.is_empty() && s.chars().all(|c| c == 'm' || c == 'h');
    let vowelless = w
        .chars()
        .all(|c| c.is_alphabetic() && !"aeiouy".contains(c));
    let count = |set: &str| w.chars().filter(|&c| set.contains(c)).count();
    let murmur =
        w.chars().all(|c| "mhau".contains(c)) && count("m") >= 3 && count("m") > count("au");
    BACKCHANNEL.contains(&word)
        || vowelless
        || murmur
        || (w.len() >= 2 && w.starts_with(['u', 'a', 'e', 'o']) && hums(&w[1..]))
}

/// What speech that did not mean to interrupt (`meant` is `None`) was taken for.
pub fn let_go_as(heard: &str) -> &'static str {
    match no_words(heard) {
        true => "no words",
        false if meant(heard, "").is_none() => "a backchannel",
        false => "seesay's own voice",
    }
}

/// Did the recogniser hear no word at all (nothing, or only its notes on sounds: "(coughs)")?
pub fn no_words(heard: &str) -> bool {
    words(heard).is_empty()
}

/// What the interruption says, if it means it: `heard` minus backchannel words, unless what is
/// left is what seesay itself is saying (`speaking`: the answer so far), heard back as an echo.
pub fn meant(heard: &str, speaking: &str) -> Option<String> {
    let said: Vec<String> = words(heard).into_iter().filter(|w| !is_filler(w)).collect();
    if said.is_empty() {
        return None;
    }
    let answer = words(speaking);
    // Judged on the words that carry meaning (the small ones are in every answer), each
    // counted as an echo if the answer has it or a word it could be a piece of (what an echo
    // that was only partly cancelled sounds like: "come" for "complex").
    let content: Vec<&String> = said
        .iter()
        .filter(|w| !SMALL.contains(&w.as_str()))
        .collect();
    let judged: Vec<&String> = match content.is_empty() {
        true => said.iter().collect(),
        false => content,
    };
    let echoed = judged.iter().filter(|w| echo_of(w, &answer)).count();
    // Mostly seesay's own words: its voice, back through the microphone.
    if echoed * 10 >= judged.len() * 7 {
        return None;
    }
    Some(said.join(" "))
}

#[cfg(test)]
mod tests {
    use super::{meant, no_words};

    #[test]
    fn only_silence_and_sound_notes_are_no_words() {
        for heard in ["", " ", "(coughs)", "[BLANK_AUDIO]", "*sighs* ..."] {
            assert!(no_words(heard), "{heard:?}");
        }
        for heard in ["Mm-hmm.", "What?", "Uh"] {
            assert!(!no_words(heard), "{heard:?}");
        }
    }

    #[test]
    fn backchannels_and_noise_do_not_interrupt_but_words_do() {
        let answer = "The capital of Italy is Rome, a city of nearly three million people.";
        for heard in [
            "",
            "Mm-hmm.",
            "Yeah.",
            "Uh-huh, okay.",
            "Hmm...",
            "(coughs)",
            "Oh, I see.",
            "MMMM",
            "Mhmm.",
            "Uhh",
            "Ahh.",
            "Hm-hm.",
            "NMMM.",
            "MAMMAM",
            "Mmhmmam.",
            "Shh.",
        ] {
            assert_eq!(meant(heard, answer), None, "{heard:?}");
        }
        assert_eq!(meant("Wait, stop.", answer).as_deref(), Some("wait stop"));
        // Words of m's and vowels are still words.
        assert_eq!(meant("Mama, ham.", answer).as_deref(), Some("mama ham"));
        assert_eq!(meant("Hummus?", answer).as_deref(), Some("hummus"));
        assert_eq!(
            meant("Yeah, but what about France?", answer).as_deref(),
            Some("but what about france")
        );
    }

    #[test]
    fn one_stray_word_is_not_sure_but_a_request_is() {
        assert!(!super::sure("month"));
        assert!(!super::sure("in month"));
        assert!(super::sure("stop"));
        assert!(super::sure("what"));
        assert!(super::sure("tell about animal"));
        assert!(super::sure("bees honey"));
    }

    #[test]
    fn speech_let_go_says_what_it_was_taken_for() {
        use super::let_go_as;
        assert_eq!(let_go_as(""), "no words");
        assert_eq!(let_go_as("Mm-hmm."), "a backchannel");
        assert_eq!(let_go_as("the capital of France"), "seesay's own voice");
    }

    #[test]
    fn seesays_own_words_coming_back_are_an_echo() {
        let answer = "The capital of Italy is Rome, a city of nearly three million people.";
        assert_eq!(meant("a city of nearly three million", answer), None);
        assert_eq!(meant("capital of Italy is Rome", answer), None);
        assert!(meant("what is the capital of Spain", answer).is_some());
        // Half-cancelled echo comes out as pieces of the answer's words.
        assert_eq!(
            meant("and come", "France has a long and complex history"),
            None
        );
        assert!(meant(
            "stop, what is the capital of Italy",
            "France has a long history"
        )
        .is_some());
    }
}
