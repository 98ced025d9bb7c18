//! The application's side of a call (RFC 3261 §13.3.1 progress, answer and
//! refusal, §15.1.1 BYE, §14.2 re-INVITE answers; RFC 3515 REFER) and the
//! in-dialog requests the node sends.

use std::time::Instant;

use crate::proto::sip::dialog::DialogState;
use crate::proto::sip::message::{Method, Response};
use crate::proto::sip::syntax::quote;
use crate::proto::sip::uri::Uri;

use super::requests::ALLOW;
use super::{EndReason, Phase, ReferState, SipCallId, Uas, UasEvent};

/// A Warning header value (§20.43): `w` as given when it already starts
/// with a 3-digit code, else `399 <agent> "<w>"`.
pub(super) fn warning_value(w: &str, agent: &str) -> String {
    let w = w.trim();
    let b = w.as_bytes();
    if b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
        w.to_string()
    } else {
        format!("399 {agent} {}", quote(w))
    }
}

/// A final failure status: 300..=699 as given, anything else 500.
fn failure_status(status: u16) -> u16 {
    if (300..=699).contains(&status) {
        status
    } else {
        500
    }
}

impl Uas {
    /// The app's failure response to an INVITE: status, Warning, and
    /// Retry-After on 503.
    fn failure_response(&self, invite: &crate::proto::sip::message::Request, status: u16, warning: Option<&str>, tag: &str) -> Response {
        let mut resp = self.response(invite, status, Some(tag));
        if let Some(w) = warning {
            let agent = self.sent_by.clone();
            resp.headers.push("Warning", warning_value(w, &agent));
        }
        if status == 503 {
            resp.headers.push("Retry-After", self.cfg.retry_after_s.to_string());
        }
        resp
    }

    /// Contact and Record-Route for a dialog-creating response (§12.1.1).
    fn dialog_response(&self, h: u64, status: u16) -> Option<Response> {
        let call = self.calls.get(&h)?;
        let mut resp = self.response(&call.invite, status, Some(&call.dialog.id.local_tag));
        for rr in call.invite.headers.get_all("Record-Route") {
            resp.headers.push("Record-Route", rr);
        }
        resp.headers.push("Contact", self.contact_header.clone());
        Some(resp)
    }

    /// 180 Ringing for an offered call.
    pub fn ring(&mut self, now: Instant, call: SipCallId) {
        let h = call.0;
        if self.calls.get(&h).is_none_or(|c| c.phase != Phase::Offered) {
            return;
        }
        let Some(resp) = self.dialog_response(h, 180) else { return };
        let key = self.calls[&h].invite_key.clone();
        self.respond(now, &key, resp);
    }

    /// 200 OK with `sdp` (application/sdp); 2xx retransmissions run until
    /// the ACK ([`UasEvent::CallConfirmed`]) or 64*T1 (BYE and
    /// [`EndReason::AckTimeout`]).
    pub fn answer(&mut self, now: Instant, call: SipCallId, sdp: &str) {
        let h = call.0;
        if self.calls.get(&h).is_none_or(|c| c.phase != Phase::Offered) {
            return;
        }
        let Some(resp) = self.dialog_response(h, 200) else { return };
        let resp = resp
            .with_header("Allow", ALLOW)
            .with_header("Supported", "")
            .with_body("application/sdp", sdp.as_bytes().to_vec());
        let Some(c) = self.calls.get_mut(&h) else { return };
        c.phase = Phase::Answered;
        c.dialog.state = DialogState::Confirmed;
        let key = c.invite_key.clone();
        self.respond(now, &key, resp);
    }

    /// Refuses an offered call with `status` (300-699, others become 500),
    /// an optional Warning, and Retry-After on 503. No event follows.
    pub fn reject(&mut self, now: Instant, call: SipCallId, status: u16, warning: Option<&str>) {
        let h = call.0;
        let Some(c) = self.calls.get(&h).filter(|c| c.phase == Phase::Offered) else { return };
        let resp = self.failure_response(&c.invite, failure_status(status), warning, &c.dialog.id.local_tag);
        let key = c.invite_key.clone();
        self.respond(now, &key, resp);
        self.end_call(h, None);
    }

    /// Ends the call: BYE when confirmed (after the ACK if it is still
    /// due), 480 when not answered yet. [`EndReason::ByeFromUs`] follows.
    pub fn hangup(&mut self, now: Instant, call: SipCallId) {
        let h = call.0;
        let Some(c) = self.calls.get_mut(&h) else { return };
        match c.phase {
            Phase::Offered => {
                self.fail_pending_invites(now, h, 480);
                self.end_call(h, Some(EndReason::ByeFromUs));
            }
            Phase::Answered => c.hangup_after_ack = true,
            Phase::Confirmed => self.send_bye(now, h),
            Phase::Ending => {}
        }
    }

    /// Sends BYE on a confirmed call (an unanswered re-INVITE gets 487).
    pub(super) fn send_bye(&mut self, now: Instant, h: u64) {
        self.fail_pending_invites(now, h, 487);
        if let Some(c) = self.calls.get_mut(&h) {
            c.phase = Phase::Ending;
        }
        if !self.send_in_dialog(now, h, Method::Bye, |_| {}) {
            self.end_call(h, Some(EndReason::ByeFromUs));
        }
    }

    /// Sends REFER with `Refer-To: <target>` (RFC 3515); progress arrives as
    /// [`UasEvent::TransferProgress`].
    pub fn refer(&mut self, now: Instant, call: SipCallId, target: &str) {
        let h = call.0;
        let fail = |uas: &mut Uas, status: u16| uas.emit(UasEvent::TransferProgress { call, status, final_: true });
        let Some(c) = self.calls.get(&h) else { return fail(self, 481) };
        if c.phase != Phase::Confirmed || c.refer != ReferState::Idle {
            return fail(self, 491);
        }
        let bare = target.trim().trim_start_matches('<').trim_end_matches('>');
        let Ok(uri) = Uri::parse(bare) else { return fail(self, 400) };
        if !matches!(uri, Uri::Sip(_) | Uri::Tel(_)) {
            return fail(self, 400);
        }
        let referred_by = format!("<{}>", c.dialog.local_uri);
        let sent = self.send_in_dialog(now, h, Method::Refer, |req| {
            req.headers.push("Refer-To", format!("<{uri}>"));
            req.headers.push("Referred-By", referred_by);
        });
        if !sent {
            return fail(self, 503);
        }
        if let Some(c) = self.calls.get_mut(&h) {
            c.refer = ReferState::Pending;
        }
    }

    /// 200 with `sdp` to the pending re-INVITE.
    pub fn answer_reinvite(&mut self, now: Instant, call: SipCallId, sdp: &str) {
        let h = call.0;
        let Some(c) = self.calls.get_mut(&h) else { return };
        let Some((key, req)) = c.reinvite.take() else { return };
        c.reinvite_unacked = Some(key.clone());
        let tag = c.dialog.id.local_tag.clone();
        let resp = self
            .response(&req, 200, Some(&tag))
            .with_header("Contact", self.contact_header.clone())
            .with_header("Allow", ALLOW)
            .with_body("application/sdp", sdp.as_bytes().to_vec());
        self.respond(now, &key, resp);
    }

    /// Refuses the pending re-INVITE (e.g. 488 + Warning); the call goes on.
    pub fn reject_reinvite(&mut self, now: Instant, call: SipCallId, status: u16, warning: Option<&str>) {
        let h = call.0;
        let Some(c) = self.calls.get_mut(&h) else { return };
        let Some((key, req)) = c.reinvite.take() else { return };
        let tag = c.dialog.id.local_tag.clone();
        let resp = self.failure_response(&req, failure_status(status), warning, &tag);
        self.respond(now, &key, resp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings() {
        assert_eq!(warning_value("304 edge \"Media type not available\"", "h"), "304 edge \"Media type not available\"");
        assert_eq!(warning_value("no codec", "edge:5060"), "399 edge:5060 \"no codec\"");
        assert_eq!(failure_status(200), 500);
        assert_eq!(failure_status(488), 488);
    }
}
