//! `seesay bench --stage quality`: 30 short spoken-assistant questions (facts, arithmetic,
//! everyday knowledge) in, the configured language model's answers out, each checked against the
//! answers accepted for it. A measurement, not a test: the test suite asks three of them.

use anyhow::Result;

use seesay::config::Config;
use seesay::stages::llm::{self, Conversation, Finish};
use seesay::stages::Cancel;
use seesay::store::Store;

/// (question, accepted answers): an answer is right when it contains one of them as whole words.
pub const QUESTIONS: [(&str, &[&str]); 30] = [
    // The test suite asks the first three: a fact, arithmetic, everyday knowledge.
    ("What is the capital of Italy?", &["rome"]),
    ("What is seven times eight?", &["56", "fifty six"]),
    ("How many legs does a spider have?", &["8", "eight"]),
    ("What is the capital of Japan?", &["tokyo"]),
    ("What is the capital of Canada?", &["ottawa"]),
    ("What is the capital of Australia?", &["canberra"]),
    ("What is fifteen plus twenty-seven?", &["42", "forty two"]),
    (
        "What is one hundred divided by four?",
        &["25", "twenty five"],
    ),
    ("What is twelve minus five?", &["7", "seven"]),
    ("How many days are in a week?", &["7", "seven"]),
    ("How many minutes are in an hour?", &["60", "sixty"]),
    ("How many continents are there?", &["7", "seven"]),
    (
        "What color do you get when you mix blue and yellow?",
        &["green"],
    ),
    (
        "What is the largest planet in our solar system?",
        &["jupiter"],
    ),
    ("Which planet is known as the Red Planet?", &["mars"]),
    ("Who wrote Romeo and Juliet?", &["shakespeare"]),
    ("Who painted the Mona Lisa?", &["leonardo", "da vinci"]),
    (
        "At what temperature does water boil in Celsius?",
        &["100", "one hundred"],
    ),
    (
        "What gas do plants take in from the air?",
        &["carbon dioxide", "co2"],
    ),
    ("What do bees make?", &["honey"]),
    ("What is the largest ocean on Earth?", &["pacific"]),
    (
        "At what temperature does water freeze in Fahrenheit?",
        &["32", "thirty two"],
    ),
    ("Which animal is called the king of the jungle?", &["lion"]),
    ("How many hours are in a day?", &["24", "twenty four"]),
    ("What is the opposite of hot?", &["cold"]),
    ("What language do people speak in Brazil?", &["portuguese"]),
    ("What is the tallest mountain in the world?", &["everest"]),
    ("What is the chemical symbol for gold?", &["au"]),
    ("What is the fastest land animal?", &["cheetah"]),
    ("How many sides does a triangle have?", &["3", "three"]),
];

/// Lowercase words, hyphens split ("forty-two" → forty two).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `answer` contains one of `accepted` as a run of whole words.
pub fn is_right(answer: &str, accepted: &[&str]) -> bool {
    let said = words(answer);
    accepted.iter().any(|a| {
        let want = words(a);
        said.windows(want.len()).any(|w| w == want.as_slice())
    })
}

/// Asks the first `n` questions (each in a fresh conversation, as a spoken question would be);
/// prints each answer and the score; returns (right, asked).
pub fn run(cfg: &Config, n: usize) -> Result<(usize, usize)> {
    let store = Store::from_config(&cfg.models)?;
    let mut model = llm::open(&cfg.llm, &store)?;
    let cancel = Cancel::new();
    let mut right = 0;
    let mut words_said = 0;
    let asked = n.clamp(1, QUESTIONS.len());
    for (q, accepted) in &QUESTIONS[..asked] {
        let mut conv = Conversation::new(&cfg.llm);
        let msgs = conv.prompt_for(model.as_mut(), q)?;
        let (answer, finish) = model.generate(&msgs, &cancel, &mut |_| {})?;
        let ok = is_right(&answer, accepted);
        right += usize::from(ok);
        words_said += answer.split_whitespace().count();
        let cut = if finish == Finish::Length {
            " [cut]"
        } else {
            ""
        };
        outln!(
            "{} {q} -> {answer}{cut}",
            if ok { "right" } else { "WRONG" }
        );
    }
    outln!(
        "quality: {right} of {asked} right ({}), {:.1} words per answer on average",
        model.describe(),
        words_said as f64 / asked as f64
    );
    Ok((right, asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_word_by_word() {
        assert!(is_right("It is forty-two.", &["42", "forty two"]));
        assert!(is_right("The answer is 42.", &["42", "forty two"]));
        assert!(!is_right("It is 420.", &["42"]));
        assert!(is_right("The symbol is Au.", &["au"]));
        assert!(!is_right("Because of gravity.", &["au"]));
        assert!(!is_right("I do not know.", &["rome"]));
    }
}
