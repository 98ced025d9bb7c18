//! Slot values from what the caller said or keyed: digit strings from spoken
//! words ("four oh five", "double seven"), numerals the recogniser wrote
//! ("4051", "40-51") or DTMF. This is value normalisation, not intent
//! detection: intents come only from the classifier.

/// The longest run of digits in `text`, reading digit words, "oh"/"o" as zero,
/// "double"/"triple" as repetition, and numerals. Separators that people and
/// recognisers put between digit groups (spaces, commas, dashes, "and") do
/// not break a run; any other word does. Words that sound like digits but
/// are usually words ("to", "for", "oh") count only in a run that also has
/// a real digit: "calling to find out" holds no number, "four oh five" does.
pub fn digits_in(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let mut best = String::new();
    let mut run = String::new();
    // whether the run has a digit that is not also a common word
    let mut run_certain = false;
    let mut repeat = 1usize;
    for raw in lower.split(|c: char| c.is_whitespace() || c == ',' || c == '-' || c == '.' || c == '?' || c == '!') {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
        if word.is_empty() || word == "and" {
            continue;
        }
        if let Some(n) = match word {
            "double" => Some(2),
            "triple" => Some(3),
            _ => None,
        } {
            repeat = n;
            continue;
        }
        let digits = if word.chars().all(|c| c.is_ascii_digit()) {
            Some(word.to_string())
        } else {
            digit_word(word).map(|d| d.to_string())
        };
        match digits {
            Some(d) => {
                for _ in 0..repeat {
                    run.push_str(&d);
                }
                run_certain |= !AMBIGUOUS_DIGIT_WORDS.contains(&word);
                repeat = 1;
            }
            None => {
                if run_certain && run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
                run_certain = false;
                repeat = 1;
            }
        }
    }
    if run_certain && run.len() > best.len() {
        best = run;
    }
    (!best.is_empty()).then_some(best)
}

/// Digit words that are more often ordinary words.
const AMBIGUOUS_DIGIT_WORDS: &[&str] = &["oh", "o", "to", "too", "for"];

fn digit_word(w: &str) -> Option<char> {
    Some(match w {
        "zero" | "oh" | "o" => '0',
        "one" => '1',
        "two" | "to" | "too" => '2',
        "three" => '3',
        "four" | "for" => '4',
        "five" => '5',
        "six" => '6',
        "seven" => '7',
        "eight" => '8',
        "nine" => '9',
        _ => return None,
    })
}

/// Digits spaced for speech: "4051" -> "4 0 5 1". Anything else unchanged.
pub fn speak_digits(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
        value.chars().map(String::from).collect::<Vec<_>>().join(" ")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoken_digits() {
        assert_eq!(digits_in("my order number is four five six seven eight nine").as_deref(), Some("456789"));
        assert_eq!(digits_in("It's 1 2 3, 4 5 6.").as_deref(), Some("123456"));
        assert_eq!(digits_in("order 40-51-77").as_deref(), Some("405177"));
        assert_eq!(digits_in("five oh double seven two").as_deref(), Some("50772"));
    }

    #[test]
    fn words_between_groups_break_runs() {
        // "to"/"for" count as digits only inside a run of digits
        assert_eq!(digits_in("I want to return order 123456 please").as_deref(), Some("123456"));
        assert_eq!(digits_in("nothing here"), None);
        // digit-like words alone are words
        assert_eq!(digits_in("Hi, I'm calling to find out where my order is."), None);
        assert_eq!(digits_in("it's for my son, oh well"), None);
        assert_eq!(digits_in("four oh five to seven").as_deref(), Some("40527"));
    }

    #[test]
    fn speaking() {
        assert_eq!(speak_digits("4051"), "4 0 5 1");
        assert_eq!(speak_digits("A12"), "A12");
    }
}
