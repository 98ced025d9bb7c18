//! The flow's optional post-call satisfaction survey (`[survey]`): what the
//! agent asks after its goodbye, how long it waits for a keyed rating (one
//! DTMF digit, 1 worst ..= 5 best) and what it says once rated. The call
//! machine (`call::survey`) runs it; this module only parses and validates.

use serde::Deserialize;

/// Ratings run from 1 (worst) to this (best), one DTMF digit.
pub const MAX_RATING: u8 = 5;

/// `[survey]` of a flow file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SurveySpec {
    /// Asked after the goodbye: how to rate, e.g. "press 1 to 5".
    pub prompt: String,
    /// Said after a rating, before hanging up.
    pub thanks: String,
    /// How long after the prompt a key is awaited before hanging up unrated.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

fn default_timeout_ms() -> u32 {
    6000
}

/// Shortest and longest wait for the rating.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 1000..=30_000;

impl SurveySpec {
    /// Errors name the key (`survey.prompt`, ...), as the flow's other checks do.
    pub(super) fn validate(&self) -> Result<(), String> {
        for (key, text) in [("survey.prompt", &self.prompt), ("survey.thanks", &self.thanks)] {
            if text.trim().is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
        }
        if !TIMEOUT_RANGE_MS.contains(&self.timeout_ms) {
            return Err(format!(
                "survey.timeout_ms: {} must be within {}..={}",
                self.timeout_ms,
                TIMEOUT_RANGE_MS.start(),
                TIMEOUT_RANGE_MS.end()
            ));
        }
        Ok(())
    }

    /// The rating a key stands for: `'1'..='5'` -> 1..=5, anything else none.
    pub fn rating(digit: char) -> Option<u8> {
        digit.to_digit(10).map(|d| d as u8).filter(|d| (1..=MAX_RATING).contains(d))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Flow, FlowError};
    use super::*;

    const RETAIL: &str = include_str!("../../configs/flows/retail.toml");

    /// The retail flow with its `[survey]` table replaced by `survey`.
    fn with_survey(survey: &str) -> String {
        let start = RETAIL.find("[survey]").expect("retail has a survey");
        let end = RETAIL[start..].find("\n[[").map(|i| start + i + 1).unwrap_or(RETAIL.len());
        format!("{}{survey}\n{}", &RETAIL[..start], &RETAIL[end..])
    }

    fn error(text: &str) -> String {
        match Flow::parse(text, "t") {
            Err(e @ (FlowError::Parse { .. } | FlowError::Invalid { .. })) => e.to_string(),
            other => panic!("expected a parse or validation error, got {other:?}"),
        }
    }

    #[test]
    fn retail_flow_has_a_survey() {
        let flow = Flow::embedded("retail").unwrap();
        let survey = flow.survey.expect("retail survey");
        assert!(survey.prompt.contains('1') && survey.prompt.contains('5'), "{}", survey.prompt);
        assert!(!survey.thanks.is_empty());
        assert_eq!(survey.timeout_ms, 6000);
    }

    #[test]
    fn survey_is_optional_and_timeout_defaults() {
        let flow = Flow::parse(&with_survey(""), "t").unwrap();
        assert_eq!(flow.survey, None);
        let flow = Flow::parse(&with_survey("[survey]\nprompt = \"Rate us, 1 to 5.\"\nthanks = \"Thanks!\""), "t").unwrap();
        assert_eq!(flow.survey.unwrap().timeout_ms, 6000);
    }

    #[test]
    fn survey_errors_name_the_key() {
        let e = error(&with_survey("[survey]\nprompt = \"  \"\nthanks = \"Thanks!\""));
        assert!(e.contains("survey.prompt: must not be empty"), "{e}");
        let e = error(&with_survey("[survey]\nprompt = \"Rate us.\"\nthanks = \"\""));
        assert!(e.contains("survey.thanks: must not be empty"), "{e}");
        let e = error(&with_survey("[survey]\nprompt = \"Rate us.\"\nthanks = \"Thanks!\"\ntimeout_ms = 200"));
        assert!(e.contains("survey.timeout_ms: 200 must be within 1000..=30000"), "{e}");
        let e = error(&with_survey("[survey]\nprompt = \"Rate us.\"\nthanks = \"Thanks!\"\ntimeout = 5000"));
        assert!(e.contains("unknown field `timeout`"), "{e}");
        let e = error(&with_survey("[survey]\nprompt = \"Rate us.\""));
        assert!(e.contains("missing field `thanks`"), "{e}");
        let e = error(&with_survey("[survey]\nprompt = \"Rate us.\"\nthanks = \"Thanks!\"\ntimeout_ms = -1"));
        assert!(e.contains("timeout_ms"), "{e}");
    }

    #[test]
    fn only_keys_one_to_five_are_ratings() {
        assert_eq!(SurveySpec::rating('1'), Some(1));
        assert_eq!(SurveySpec::rating('5'), Some(5));
        for key in ['0', '6', '9', '*', '#', 'a'] {
            assert_eq!(SurveySpec::rating(key), None, "{key}");
        }
    }
}
