//! One call's dialogue state over a [`Flow`]: which task is pending, which
//! slots are filled, which tasks were attempted and completed. Each caller
//! turn (an intent, the transcript and any DTMF digits) yields the reply to
//! speak, the action to take and the task events for the outcome record.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{render, slots, CompletionCriterion, Flow, IntentAction};

/// What the call should do after speaking the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowAction {
    Continue,
    Transfer,
    EndCall,
}

/// A task's progress, for the outcome record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TaskEvent {
    Attempted { task: String },
    SlotFilled { task: String, slot: String },
    Completed { task: String },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FlowReply {
    pub text: String,
    pub action: FlowAction,
    /// The task this turn worked on, if any.
    pub task: Option<String>,
    pub events: Vec<TaskEvent>,
    /// The turn was not understood: nothing heard, the catch-all reply, or a
    /// slot asked for again. Consecutive ones make the conversation "stuck".
    pub fallback: bool,
}

#[derive(Debug, Clone)]
pub struct FlowSession {
    flow: Arc<Flow>,
    slots: BTreeMap<String, String>,
    pending_task: Option<String>,
    attempted: Vec<String>,
    completed: Vec<String>,
}

impl FlowSession {
    pub fn new(flow: Arc<Flow>) -> Self {
        FlowSession { flow, slots: BTreeMap::new(), pending_task: None, attempted: Vec::new(), completed: Vec::new() }
    }

    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    pub fn greeting(&self) -> &str {
        &self.flow.greeting
    }

    pub fn slots(&self) -> &BTreeMap<String, String> {
        &self.slots
    }

    pub fn tasks_attempted(&self) -> &[String] {
        &self.attempted
    }

    pub fn tasks_completed(&self) -> &[String] {
        &self.completed
    }

    /// The task waiting for a slot, if any.
    pub fn pending_task(&self) -> Option<&str> {
        self.pending_task.as_deref()
    }

    /// Nothing intelligible was said.
    pub fn on_no_input(&self) -> FlowReply {
        FlowReply {
            text: self.flow.no_input_reply.clone(),
            action: FlowAction::Continue,
            task: None,
            events: vec![],
            fallback: true,
        }
    }

    /// Where the dialogue is, as one word for the router's `edge_states` and
    /// the cluster's context: the slot being asked for, else the pending
    /// task, else `idle`.
    pub fn state_label(&self) -> String {
        let Some(task) = self.pending_task.as_deref() else { return "idle".into() };
        self.flow
            .task(task)
            .and_then(|t| t.requires.iter().find(|s| !self.slots.contains_key(*s)))
            .cloned()
            .unwrap_or_else(|| task.to_string())
    }

    /// The router hands the turn to a person: the flow's transfer intent
    /// answers it (its hand-off line, its task attempted). `None` when the
    /// flow has no transfer intent.
    pub fn on_handoff(&mut self, transcript: &str) -> Option<FlowReply> {
        let intent = self.flow.transfer_intent()?.name.clone();
        Some(self.on_turn(&intent, transcript, None))
    }

    /// A caller turn: the classified intent, what was said, DTMF keyed (if any).
    pub fn on_turn(&mut self, intent: &str, transcript: &str, dtmf: Option<&str>) -> FlowReply {
        let mut events = Vec::new();
        let flow = Arc::clone(&self.flow);
        let spec = flow.intent(intent);
        let action = spec.map(|s| s.action).unwrap_or(IntentAction::Reply);

        // A pending task takes the caller's digits before anything else, unless
        // the caller asks to leave (a person, or goodbye).
        let task_name = match (&self.pending_task, spec.and_then(|s| s.task.clone())) {
            (Some(pending), _) if action == IntentAction::Reply => Some(pending.clone()),
            (_, Some(t)) => Some(t),
            _ => None,
        };

        let Some(task_name) = task_name else {
            let catch_all = flow.fallback_intent().expect("validated flows have intents");
            let fallback = spec.is_none_or(|s| s.name == catch_all.name);
            let spec = spec.unwrap_or(catch_all);
            let text = spec.reply.clone().unwrap_or_default();
            let action = match spec.action {
                IntentAction::Reply => FlowAction::Continue,
                IntentAction::Transfer => FlowAction::Transfer,
                IntentAction::EndCall => FlowAction::EndCall,
            };
            if action != FlowAction::Continue {
                self.pending_task = None;
            }
            return FlowReply { text, action, task: None, events, fallback };
        };

        let task = flow.task(&task_name).expect("validated flows reference existing tasks");
        if !self.attempted.contains(&task.name) {
            self.attempted.push(task.name.clone());
            events.push(TaskEvent::Attempted { task: task.name.clone() });
        }

        // Fill required slots from DTMF first (exact), then from speech.
        let mut failed_slot = None;
        for slot_name in &task.requires {
            if self.slots.contains_key(slot_name) {
                continue;
            }
            let slot = flow.slot(slot_name).expect("validated");
            let heard = dtmf
                .filter(|_| slot.dtmf)
                .map(|d| d.chars().filter(|c| c.is_ascii_digit()).collect::<String>())
                .filter(|d| !d.is_empty())
                .or_else(|| slots::digits_in(transcript));
            match heard {
                Some(d) if (slot.min_digits..=slot.max_digits).contains(&d.len()) => {
                    self.slots.insert(slot_name.clone(), d);
                    events.push(TaskEvent::SlotFilled { task: task.name.clone(), slot: slot_name.clone() });
                }
                Some(_) => failed_slot = failed_slot.or(Some((slot_name.clone(), true))),
                None => failed_slot = failed_slot.or(Some((slot_name.clone(), false))),
            }
        }
        if let Some((slot_name, heard_something)) = failed_slot {
            let slot = flow.slot(&slot_name).expect("validated");
            // Retry wording only when this task already asked for the slot.
            let asked_before = self.pending_task.as_deref() == Some(task.name.as_str());
            self.pending_task = Some(task.name.clone());
            let retry = heard_something || asked_before;
            let text = if retry { slot.retry_prompt.clone() } else { slot.prompt.clone() };
            return FlowReply { text, action: FlowAction::Continue, task: Some(task.name.clone()), events, fallback: retry };
        }

        self.pending_task = None;
        let text = render(&task.reply, &self.slots).unwrap_or_else(|_| task.reply.clone());
        let flow_action = match action {
            IntentAction::Transfer => FlowAction::Transfer,
            IntentAction::EndCall => FlowAction::EndCall,
            IntentAction::Reply => FlowAction::Continue,
        };
        // Completion that the reply itself achieves is recorded now; the
        // transport confirms transfers and hang-ups.
        if task.complete_when == CompletionCriterion::Answered && !self.completed.contains(&task.name) {
            self.completed.push(task.name.clone());
            events.push(TaskEvent::Completed { task: task.name.clone() });
        }
        FlowReply { text, action: flow_action, task: Some(task.name.clone()), events, fallback: false }
    }

    /// The transport reports that a transfer was accepted or the caller ended
    /// the call; tasks whose criterion that is are completed.
    pub fn on_call_event(&mut self, criterion: CompletionCriterion) -> Vec<TaskEvent> {
        let mut events = Vec::new();
        for name in self.attempted.clone() {
            let Some(task) = self.flow.task(&name) else { continue };
            if task.complete_when == criterion && !self.completed.contains(&name) {
                self.completed.push(name.clone());
                events.push(TaskEvent::Completed { task: name });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> FlowSession {
        FlowSession::new(Arc::new(Flow::embedded("retail").unwrap()))
    }

    #[test]
    fn order_status_asks_for_the_number_then_answers() {
        let mut s = session();
        let r = s.on_turn("order_status", "where is my order", None);
        assert_eq!(r.text, s.flow().slot("order_number").unwrap().prompt);
        assert_eq!(s.pending_task(), Some("order_status"));
        assert!(s.tasks_completed().is_empty());
        // the number alone classifies as "other" but fills the pending slot
        let r = s.on_turn("other", "it's four five six seven eight nine", None);
        assert!(r.text.contains("4 5 6 7 8 9"), "{}", r.text);
        assert_eq!(s.tasks_completed(), ["order_status"]);
        assert!(r.events.contains(&TaskEvent::Completed { task: "order_status".into() }));
    }

    #[test]
    fn digits_in_the_first_utterance_answer_at_once() {
        let mut s = session();
        let r = s.on_turn("cancel_order", "please cancel order 123456", None);
        assert!(r.text.contains("1 2 3 4 5 6"), "{}", r.text);
        assert_eq!(s.tasks_completed(), ["cancel_order"]);
    }

    #[test]
    fn dtmf_fills_the_slot() {
        let mut s = session();
        s.on_turn("return_item", "I want to return something", None);
        let r = s.on_turn("other", "", Some("778899#"));
        assert!(r.text.contains("7 7 8 8 9 9"), "{}", r.text);
    }

    #[test]
    fn too_few_digits_ask_again() {
        let mut s = session();
        let r = s.on_turn("order_status", "order one two three", None);
        assert_eq!(r.text, s.flow().slot("order_number").unwrap().retry_prompt);
    }

    #[test]
    fn human_request_leaves_a_pending_task_and_transfers() {
        let mut s = session();
        s.on_turn("order_status", "where is my order", None);
        let r = s.on_turn("human_agent", "let me talk to a person", None);
        assert_eq!(r.action, FlowAction::Transfer);
        let ev = s.on_call_event(CompletionCriterion::TransferAccepted);
        assert_eq!(ev, vec![TaskEvent::Completed { task: "human_agent".into() }]);
    }

    #[test]
    fn goodbye_ends_the_call() {
        let mut s = session();
        let r = s.on_turn("goodbye", "that's all, bye", None);
        assert_eq!(r.action, FlowAction::EndCall);
    }

    #[test]
    fn unknown_intent_falls_back_to_the_last_intent_reply() {
        let mut s = session();
        let r = s.on_turn("not_a_label", "blah", None);
        assert_eq!(r.action, FlowAction::Continue);
        assert!(r.fallback);
        assert_eq!(Some(r.text), s.flow().intent("other").unwrap().reply.clone());
    }

    #[test]
    fn fallback_marks_turns_not_understood() {
        let mut s = session();
        assert!(s.on_no_input().fallback);
        assert!(s.on_turn("other", "what's the weather", None).fallback, "the catch-all intent");
        let first_ask = s.on_turn("order_status", "where is my order", None);
        assert!(!first_ask.fallback, "asking for a slot the first time is progress");
        assert!(s.on_turn("other", "I don't know it", None).fallback, "asked again");
        assert!(!s.on_turn("other", "four five six seven eight nine", None).fallback);
    }

    #[test]
    fn state_label_names_the_awaited_slot() {
        let mut s = session();
        assert_eq!(s.state_label(), "idle");
        s.on_turn("order_status", "where is my order", None);
        assert_eq!(s.state_label(), "order_number");
        s.on_turn("other", "four five six seven eight nine", None);
        assert_eq!(s.state_label(), "idle");
    }

    #[test]
    fn handoff_speaks_the_flows_transfer_line() {
        let mut s = session();
        s.on_turn("order_status", "where is my order", None);
        let r = s.on_handoff("just get me a real person").expect("retail has a transfer intent");
        assert_eq!(r.action, FlowAction::Transfer);
        assert_eq!(r.task.as_deref(), Some("human_agent"));
        assert_eq!(s.pending_task(), None);
    }
}
