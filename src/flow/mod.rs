//! Conversation flows: what the agent understands and how it answers.
//!
//! A flow is a TOML file (`configs/flows/*.toml`, format documented in
//! `configs/flows/README.md`) with the intents the classifier may choose
//! between (each with a description and few-shot examples), the slots to
//! fill (an order number from spoken digits or DTMF), the tasks a caller can
//! complete and their completion criteria, and the replies. This module
//! parses and validates flows; [`session::FlowSession`] is the per-call
//! dialogue state that turns an intent into a reply; [`survey::SurveySpec`]
//! is the optional post-call satisfaction survey. Pure: no IO beyond reading
//! the flow file, no clocks.

pub mod session;
pub mod slots;
pub mod survey;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use session::{FlowAction, FlowReply, FlowSession, TaskEvent};
pub use survey::SurveySpec;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("cannot read flow file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("flow {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("flow {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("no flow named {name:?} in {dir} (available: {available})")]
    NotFound { name: String, dir: String, available: String },
}

/// What a flow intent does when the classifier picks it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IntentAction {
    /// Answer with the intent's reply (or its task's replies) and keep listening.
    Reply,
    /// Say the reply, then hand the call to a person.
    Transfer,
    /// Say the reply, then end the call.
    EndCall,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// The system prompt: who the agent is and what it classifies.
    pub instructions: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    /// The label the model answers with: lowercase letters, digits, `_`.
    pub name: String,
    /// One line for the model saying when this intent applies.
    pub description: String,
    /// Few-shot examples: things callers say that mean this intent.
    #[serde(default)]
    pub examples: Vec<String>,
    /// The task this intent starts, if any.
    #[serde(default)]
    pub task: Option<String>,
    /// The reply when the intent has no task.
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default = "default_action")]
    pub action: IntentAction,
}

fn default_action() -> IntentAction {
    IntentAction::Reply
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// A run of digits, spoken ("four five six") or keyed (DTMF).
    Digits,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    pub name: String,
    pub kind: SlotKind,
    pub min_digits: usize,
    pub max_digits: usize,
    /// Whether DTMF digits (ended by `#`) fill this slot.
    #[serde(default = "yes")]
    pub dtmf: bool,
    /// What the agent asks when the slot is needed and empty.
    pub prompt: String,
    /// What the agent says when what it heard does not fit the slot.
    pub retry_prompt: String,
}

fn yes() -> bool {
    true
}

/// When a task counts as completed (the outcome the business is paid for).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CompletionCriterion {
    /// All required slots are filled and the task's reply has been given.
    Answered,
    /// The caller was handed to a person (the transfer was accepted).
    TransferAccepted,
    /// The call ended politely at the caller's request.
    CallerEnded,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    /// Slots that must be filled before the task can be answered.
    #[serde(default)]
    pub requires: Vec<String>,
    /// The reply once the required slots are filled; `{slot}` is replaced.
    pub reply: String,
    pub complete_when: CompletionCriterion,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    /// Bumped when the flow's meaning changes; recorded with outcomes.
    pub version: u32,
    /// Spoken when a call is answered.
    pub greeting: String,
    /// Spoken when nothing was understood (empty transcript).
    pub no_input_reply: String,
    /// Primes speech recognition with the flow's vocabulary (product words,
    /// "cancel", "billing"): fewer misheard domain words, at some decoder cost.
    #[serde(default)]
    pub asr_prompt: Option<String>,
    pub classifier: ClassifierSpec,
    #[serde(rename = "intent")]
    pub intents: Vec<IntentSpec>,
    #[serde(rename = "slot", default)]
    pub slots: Vec<SlotSpec>,
    #[serde(rename = "task", default)]
    pub tasks: Vec<TaskSpec>,
    /// Asked after the goodbye of a call the flow ends (not after transfers).
    #[serde(default)]
    pub survey: Option<SurveySpec>,
}

/// The flows shipped inside the binary, by name.
const EMBEDDED: &[(&str, &str)] = &[("retail", include_str!("../../configs/flows/retail.toml"))];

impl Flow {
    /// Parses and validates flow text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Flow, FlowError> {
        let flow: Flow =
            toml::from_str(text).map_err(|e| FlowError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        flow.validate().map_err(|message| FlowError::Invalid { origin: origin.to_string(), message })?;
        Ok(flow)
    }

    pub fn load(path: &Path) -> Result<Flow, FlowError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlowError::Read { path: path.to_path_buf(), source })?;
        Flow::parse(&text, &path.display().to_string())
    }

    /// A flow compiled into the binary.
    pub fn embedded(name: &str) -> Result<Flow, FlowError> {
        match EMBEDDED.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Flow::parse(text, &format!("<embedded {n}>")),
            None => Err(FlowError::NotFound {
                name: name.to_string(),
                dir: "<embedded>".into(),
                available: EMBEDDED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Loads `<dir>/<name>.toml`.
    pub fn load_named(dir: &Path, name: &str) -> Result<Flow, FlowError> {
        let path = dir.join(format!("{name}.toml"));
        if !path.is_file() {
            let mut available: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            available.sort();
            return Err(FlowError::NotFound {
                name: name.to_string(),
                dir: dir.display().to_string(),
                available: available.join(", "),
            });
        }
        Flow::load(&path)
    }

    pub fn intent(&self, name: &str) -> Option<&IntentSpec> {
        self.intents.iter().find(|i| i.name == name)
    }

    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub fn slot(&self, name: &str) -> Option<&SlotSpec> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// The catch-all intent: the last one, whose reply answers labels the
    /// flow does not know.
    pub fn fallback_intent(&self) -> Option<&IntentSpec> {
        self.intents.last()
    }

    /// The first intent that hands the caller to a person, if any.
    pub fn transfer_intent(&self) -> Option<&IntentSpec> {
        self.intents.iter().find(|i| i.action == IntentAction::Transfer)
    }

    /// Few-shot examples, taken round-robin across intents so no intent
    /// dominates the end of the prompt.
    pub fn interleaved_examples(&self) -> Vec<(&str, &str)> {
        let longest = self.intents.iter().map(|i| i.examples.len()).max().unwrap_or(0);
        let mut out = Vec::new();
        for k in 0..longest {
            for intent in &self.intents {
                if let Some(e) = intent.examples.get(k) {
                    out.push((e.as_str(), intent.name.as_str()));
                }
            }
        }
        out
    }

    fn validate(&self) -> Result<(), String> {
        if !is_label(&self.name) {
            return Err(format!("name: {:?} must be lowercase letters, digits and '_'", self.name));
        }
        for (key, text) in [("greeting", &self.greeting), ("no_input_reply", &self.no_input_reply), ("classifier.instructions", &self.classifier.instructions)] {
            if text.trim().is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
        }
        if self.intents.len() < 2 {
            return Err("intent: a flow needs at least two intents to choose between".into());
        }
        if self.intents.len() > 64 {
            return Err(format!("intent: {} intents is more than the 64 supported", self.intents.len()));
        }
        let mut seen = HashSet::new();
        for (i, intent) in self.intents.iter().enumerate() {
            let key = format!("intent[{i}] ({})", intent.name);
            if !is_label(&intent.name) {
                return Err(format!("{key}.name: must be lowercase letters, digits and '_'"));
            }
            if !seen.insert(&intent.name) {
                return Err(format!("{key}.name: duplicate intent"));
            }
            if intent.description.trim().is_empty() {
                return Err(format!("{key}.description: must not be empty"));
            }
            match (&intent.task, &intent.reply) {
                (Some(t), None) => {
                    if self.task(t).is_none() {
                        return Err(format!("{key}.task: no task named {t:?}"));
                    }
                }
                (None, Some(r)) if !r.trim().is_empty() => {}
                (Some(_), Some(_)) => return Err(format!("{key}: give either task or reply, not both")),
                _ => return Err(format!("{key}: needs a task or a reply")),
            }
        }
        let mut seen = HashSet::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let key = format!("slot[{i}] ({})", slot.name);
            if !is_label(&slot.name) || !seen.insert(&slot.name) {
                return Err(format!("{key}.name: must be a unique lowercase name"));
            }
            if slot.min_digits == 0 || slot.min_digits > slot.max_digits || slot.max_digits > 32 {
                return Err(format!(
                    "{key}: need 1 <= min_digits <= max_digits <= 32, got {}..{}",
                    slot.min_digits, slot.max_digits
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, task) in self.tasks.iter().enumerate() {
            let key = format!("task[{i}] ({})", task.name);
            if !is_label(&task.name) || !seen.insert(&task.name) {
                return Err(format!("{key}.name: must be a unique lowercase name"));
            }
            for s in &task.requires {
                if self.slot(s).is_none() {
                    return Err(format!("{key}.requires: no slot named {s:?}"));
                }
            }
            let slots: BTreeMap<String, String> = task.requires.iter().map(|s| (s.clone(), "0".into())).collect();
            render(&task.reply, &slots).map_err(|e| format!("{key}.reply: {e}"))?;
        }
        if let Some(survey) = &self.survey {
            survey.validate()?;
        }
        Ok(())
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Fills `{slot}` placeholders. Digit slots are spoken digit by digit.
pub fn render(template: &str, slots: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| "unclosed '{'".to_string())?;
        let name = &after[..close];
        let value = slots.get(name).ok_or_else(|| format!("{{{name}}} is not a required slot of this task"))?;
        out.push_str(&slots::speak_digits(value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Flows by name: from a directory when the config names one, else embedded.
#[derive(Debug, Clone)]
pub enum FlowSource {
    Dir(PathBuf),
    Embedded,
}

impl FlowSource {
    pub fn load(&self, name: &str) -> Result<Flow, FlowError> {
        match self {
            FlowSource::Dir(dir) => Flow::load_named(dir, name),
            FlowSource::Embedded => Flow::embedded(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retail() -> Flow {
        Flow::embedded("retail").unwrap()
    }

    #[test]
    fn embedded_retail_flow_has_the_seven_intents() {
        let flow = retail();
        let names: Vec<&str> = flow.intents.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["order_status", "cancel_order", "return_item", "billing_question", "human_agent", "goodbye", "other"]
        );
    }

    #[test]
    fn examples_are_interleaved() {
        let flow = retail();
        let ex = flow.interleaved_examples();
        assert_eq!(ex[0].1, "order_status");
        assert_eq!(ex[1].1, "cancel_order");
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = include_str!("../../configs/flows/retail.toml").replace("greeting =", "greting = \"x\"\ngreeting =");
        let err = Flow::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("greting"), "{err}");
    }

    #[test]
    fn dangling_references_are_rejected() {
        let text = include_str!("../../configs/flows/retail.toml").replace("task = \"order_status\"", "task = \"nope\"");
        let err = Flow::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("no task named \"nope\""), "{err}");
    }

    #[test]
    fn render_fills_and_speaks_digits() {
        let slots = BTreeMap::from([("order_number".to_string(), "4051".to_string())]);
        assert_eq!(render("Order {order_number} shipped.", &slots).unwrap(), "Order 4 0 5 1 shipped.");
        assert!(render("{missing}", &slots).is_err());
        assert!(render("{open", &slots).is_err());
    }

    #[test]
    fn missing_flow_lists_what_exists() {
        let err = Flow::embedded("nope").unwrap_err().to_string();
        assert!(err.contains("retail"), "{err}");
    }
}
