//! What each incoming request gets (RFC 3261 §8.2, §9.2, §12.2.2, §14.2,
//! §15.1.2, §17.2.3; RFC 6086 INFO; RFC 3515 NOTIFY for our REFER):
//! transaction matching first (retransmissions are absorbed and the last
//! response resent), then validation, CANCEL, in-dialog requests, the
//! source gate, and finally out-of-dialog methods (INVITE admission,
//! OPTIONS, 405 / 501 with Allow, 481).

use std::time::Instant;

use crate::proto::sip::auth::{challenges, verify, AuthError, DigestAuthorization};
use crate::proto::sip::dialog::{Dialog, DialogError, DialogId};
use crate::proto::sip::message::{Method, Request, Version};
use crate::proto::sip::validate::{validate_request_with, ValidationPolicy};

use super::admission::{dialled_number, route_number, trunk_allows};
use super::{
    server_key, stamp_via_and_route, Call, EndReason, Peer, Phase, ReferState, ServerMachine, SipCallId, Uas,
    UasEvent, MAX_DIALOGS,
};
use crate::proto::sip::transaction::ServerInviteEvent;

/// Methods we implement (the Allow header).
pub(super) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER";
/// Body types we take.
pub(super) const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf, message/sipfrag";

/// Known methods this node does not do: 405 (anything else unknown: 501).
fn known_but_not_allowed(m: &Method) -> bool {
    match m {
        Method::Register | Method::Subscribe | Method::Message | Method::Prack | Method::Update => true,
        Method::Extension(s) => s == "PUBLISH",
        _ => false,
    }
}

/// A DTMF digit from an INFO body (RFC 6086 usage; `application/dtmf-relay`
/// `Signal=5\r\nDuration=160`, `application/dtmf` `5`). Event codes 10/11
/// are `*`/`#`, 12-15 are A-D.
pub(super) fn parse_dtmf(relay: bool, body: &str) -> Option<(char, u32)> {
    let digit = |s: &str| -> Option<char> {
        let s = s.trim();
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_digit() || c == '*' || c == '#' => Some(c),
            (Some(c), None) if ('A'..='D').contains(&c.to_ascii_uppercase()) => Some(c.to_ascii_uppercase()),
            _ => match s.parse::<u8>().ok()? {
                10 => Some('*'),
                11 => Some('#'),
                n @ 12..=15 => Some((b'A' + n - 12) as char),
                _ => None,
            },
        }
    };
    if !relay {
        return Some((digit(body)?, 0));
    }
    let (mut signal, mut duration) = (None, 0u32);
    for line in body.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => signal = digit(v),
            "duration" => duration = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    Some((signal?, duration))
}

/// The status of a `message/sipfrag` body's status line (RFC 3420).
pub(super) fn sipfrag_status(body: &str) -> Option<u16> {
    let line = body.lines().next()?;
    let mut parts = line.split_whitespace();
    Version::parse(parts.next()?)?;
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse::<u16>().ok().filter(|s| (100..=699).contains(s))
}

fn body_text(req: &Request) -> Option<String> {
    (!req.body.is_empty()).then(|| String::from_utf8_lossy(&req.body).into_owned())
}

fn sdp_of(req: &Request) -> Option<String> {
    let is_sdp = req.headers.content_type().ok().flatten().is_some_and(|t| t.is("application", "sdp"));
    if is_sdp {
        body_text(req)
    } else {
        None
    }
}

impl Uas {
    pub(super) fn on_request(&mut self, now: Instant, src: Peer, mut req: Request) {
        self.stats.requests.count(&req.method);
        let peer = stamp_via_and_route(&mut req, src);
        if req.method == Method::Ack {
            self.on_ack(now, &req);
            return;
        }
        // Retransmission of a request we already have a transaction for.
        if let Some(key) = server_key(&req, &req.method) {
            if let Some(tx) = self.server_txs.get_mut(&key) {
                self.stats.retransmissions_received += 1;
                let actions = match &mut tx.machine {
                    ServerMachine::Invite(m) => m.handle(now, ServerInviteEvent::RequestRetransmitted),
                    ServerMachine::NonInvite(m) => {
                        m.handle(now, crate::proto::sip::transaction::ServerNonInviteEvent::RequestRetransmitted)
                    }
                };
                self.run_server_actions(now, &key, actions, false);
                return;
            }
        }
        let policy = ValidationPolicy::default();
        if let Err(rejection) = validate_request_with(&req, &policy) {
            let tag = self.ids.tag();
            let resp = rejection.to_response(&req).with_to_tag(&tag);
            self.answer_new(now, peer, &req, resp);
            return;
        }
        if req.method == Method::Cancel && self.on_cancel(now, peer, &req) {
            return;
        }
        if let Some(id) = DialogId::of_incoming(&req) {
            if let Some(&h) = self.dialogs.get(&id) {
                self.on_in_dialog(now, h, peer, src, req);
                return;
            }
        }
        let ip = src.addr.ip();
        if !self.cfg.trunks.iter().any(|t| trunk_allows(t, ip)) {
            let resp = self.simple(&req, 403);
            self.answer_new(now, peer, &req, resp);
            return;
        }
        let has_to_tag = req.headers.to_addr().ok().is_some_and(|t| t.tag().is_some());
        match &req.method {
            Method::Options => {
                let resp = self.options_response(&req);
                self.answer_new(now, peer, &req, resp);
            }
            m if known_but_not_allowed(m) => {
                let resp = self.simple(&req, 405).with_header("Allow", ALLOW);
                self.answer_new(now, peer, &req, resp);
            }
            Method::Extension(_) => {
                let resp = self.simple(&req, 501).with_header("Allow", ALLOW);
                self.answer_new(now, peer, &req, resp);
            }
            Method::Invite if !has_to_tag => self.on_invite(now, peer, src, req),
            Method::Refer if !has_to_tag => {
                let resp = self.simple(&req, 403);
                self.answer_new(now, peer, &req, resp);
            }
            // In-dialog methods (and anything with a To tag) for a dialog
            // we do not have; CANCEL without its INVITE.
            _ => {
                let resp = self.simple(&req, 481);
                self.answer_new(now, peer, &req, resp);
            }
        }
    }

    /// A response with a fresh To tag and the standard reason.
    fn simple(&mut self, req: &Request, status: u16) -> crate::proto::sip::message::Response {
        let tag = self.ids.tag();
        self.response(req, status, Some(&tag))
    }

    fn options_response(&mut self, req: &Request) -> crate::proto::sip::message::Response {
        self.simple(req, 200)
            .with_header("Allow", ALLOW)
            .with_header("Accept", ACCEPT)
            .with_header("Supported", "")
    }

    // ------------------------------------------------------------ ACK

    fn on_ack(&mut self, now: Instant, req: &Request) {
        // ACK for a non-2xx final (same branch as the INVITE), or a 2xx
        // ACK from a peer that reuses the branch.
        if let Some(key) = server_key(req, &Method::Invite) {
            if let Some(tx) = self.server_txs.get_mut(&key) {
                let accepted = tx.is_accepted_invite();
                let actions = match &mut tx.machine {
                    ServerMachine::Invite(m) => m.handle(now, ServerInviteEvent::Ack),
                    ServerMachine::NonInvite(_) => Vec::new(),
                };
                self.run_server_actions(now, &key, actions, accepted);
                return;
            }
        }
        // ACK for a 2xx: a new transaction of its own, routed by the dialog.
        let Some(&h) = DialogId::of_incoming(req).and_then(|id| self.dialogs.get(&id)) else { return };
        let Ok(seq) = req.headers.cseq().map(|c| c.seq) else { return };
        let Some(call) = self.calls.get(&h) else { return };
        let candidates: Vec<String> = std::iter::once(call.invite_key.clone()).chain(call.reinvite_unacked.clone()).collect();
        for key in candidates {
            let Some(tx) = self.server_txs.get_mut(&key) else { continue };
            if tx.cseq != seq || !tx.is_accepted_invite() {
                continue;
            }
            let actions = match &mut tx.machine {
                ServerMachine::Invite(m) => m.handle(now, ServerInviteEvent::Ack),
                ServerMachine::NonInvite(_) => Vec::new(),
            };
            self.run_server_actions(now, &key, actions, true);
            return;
        }
    }

    pub(super) fn on_2xx_acked(&mut self, now: Instant, h: u64, key: &str) {
        let Some(call) = self.calls.get_mut(&h) else { return };
        if call.reinvite_unacked.as_deref() == Some(key) {
            call.reinvite_unacked = None;
            return;
        }
        if call.invite_key != key || call.phase != Phase::Answered {
            return;
        }
        call.phase = Phase::Confirmed;
        if call.hangup_after_ack {
            self.send_bye(now, h);
        } else {
            self.emit(UasEvent::CallConfirmed { call: SipCallId(h) });
        }
    }

    /// No ACK for our 2xx within 64*T1 (§13.3.1.4): BYE and report.
    pub(super) fn on_ack_timeout(&mut self, now: Instant, h: u64, key: &str) {
        let Some(call) = self.calls.get(&h) else { return };
        if call.invite_key != key && call.reinvite_unacked.as_deref() != Some(key) {
            return;
        }
        self.send_in_dialog(now, h, Method::Bye, |_| {});
        self.end_call(h, Some(EndReason::AckTimeout));
    }

    // ------------------------------------------------------------ CANCEL

    /// §9.2: `true` when the CANCEL matched an INVITE transaction.
    fn on_cancel(&mut self, now: Instant, peer: Peer, req: &Request) -> bool {
        let Some(invite_key) = server_key(req, &Method::Invite) else { return false };
        let Some(invite_tx) = self.server_txs.get(&invite_key) else { return false };
        let final_sent = matches!(&invite_tx.machine, ServerMachine::Invite(m) if m.is_final_sent());
        let call = invite_tx.call;
        let tag = match call.and_then(|h| self.calls.get(&h)) {
            Some(c) => c.dialog.id.local_tag.clone(),
            None => self.ids.tag(),
        };
        let ok = self.response(req, 200, Some(&tag));
        self.answer_new(now, peer, req, ok);
        if final_sent {
            return true;
        }
        if let Some(h) = call {
            if let Some(c) = self.calls.get(&h) {
                let resp = self.response(&c.invite, 487, Some(&tag));
                self.respond(now, &invite_key, resp);
                self.end_call(h, None);
                self.emit(UasEvent::CallCancelled { call: SipCallId(h) });
            }
        }
        true
    }

    // ------------------------------------------------------------ INVITE

    fn on_invite(&mut self, now: Instant, peer: Peer, src: Peer, req: Request) {
        let Some(key) = server_key(&req, &Method::Invite) else { return };
        if self.draining {
            let resp = self.overload_response(&req);
            self.answer_new(now, peer, &req, resp);
            return;
        }
        let ip = src.addr.ip();
        let candidates: Vec<usize> =
            (0..self.cfg.trunks.len()).filter(|&i| trunk_allows(&self.cfg.trunks[i], ip)).collect();
        let trunk_index = match self.authorise(now, &req, &candidates) {
            Ok(i) => i,
            Err(resp) => {
                self.answer_new(now, peer, &req, resp);
                return;
            }
        };
        let trunk = &self.cfg.trunks[trunk_index];
        let Some((number, flow)) = dialled_number(&req).and_then(|n| route_number(trunk, &n).map(|f| (n, f))) else {
            let resp = self.simple(&req, 404);
            self.answer_new(now, peer, &req, resp);
            return;
        };
        let trunk_name = trunk.name.clone();
        let limit = (self.cfg.max_calls as usize).min(MAX_DIALOGS);
        if self.calls.len() >= limit {
            let resp = self.overload_response(&req);
            self.answer_new(now, peer, &req, resp);
            return;
        }
        let local_tag = self.ids.tag();
        let dialog = match Dialog::from_invite(&req, &local_tag, self.ids.cseq_start()) {
            Ok(d) => d,
            Err(e) => {
                let mut resp = self.simple(&req, 400);
                resp.reason = match e {
                    DialogError::MissingHeader(h) => format!("Missing {h}"),
                    _ => "Bad Contact".into(),
                };
                self.answer_new(now, peer, &req, resp);
                return;
            }
        };
        let h = self.next_call;
        if !self.open_server_tx(&key, &req, peer, Some(h)) {
            return;
        }
        self.next_call += 1;
        self.stats.calls_accepted += 1;
        let trying = self.response(&req, 100, None);
        self.respond(now, &key, trying);
        let event = UasEvent::IncomingCall {
            call: SipCallId(h),
            trunk: trunk_name,
            flow,
            number,
            caller: req.headers.from_addr().map(|f| f.uri.to_string()).unwrap_or_default(),
            call_id: dialog.id.call_id.clone(),
            remote: src.addr,
            sdp_offer: sdp_of(&req),
        };
        self.dialogs.insert(dialog.id.clone(), h);
        self.calls.insert(
            h,
            Call {
                dialog,
                peer: src,
                invite: req,
                invite_key: key,
                phase: Phase::Offered,
                reinvite: None,
                reinvite_unacked: None,
                hangup_after_ack: false,
                refer: ReferState::Idle,
            },
        );
        self.emit(event);
    }

    /// Picks the trunk for an INVITE from an allowed source: the first
    /// candidate without credentials, else digest against the candidate
    /// whose user and realm the Authorization names. `Err` is the 401/403.
    fn authorise(
        &mut self,
        now: Instant,
        req: &Request,
        candidates: &[usize],
    ) -> Result<usize, crate::proto::sip::message::Response> {
        if let Some(&i) = candidates.iter().find(|&&i| self.cfg.trunks[i].digest.is_none()) {
            return Ok(i);
        }
        let Some(&first) = candidates.first() else { return Err(self.simple(req, 403)) };
        let challenge = |uas: &mut Uas, realm: String, stale: bool| {
            let nonce = uas.nonces.issue(now);
            let mut resp = uas.simple(req, 401);
            for c in challenges(&realm, &nonce, stale) {
                resp.headers.push("WWW-Authenticate", c);
            }
            resp
        };
        let first_realm = self.cfg.trunks[first].digest.as_ref().map(|d| d.realm.clone()).unwrap_or_default();
        let Some(value) = req.headers.get("Authorization").map(str::to_string) else {
            return Err(challenge(self, first_realm, false));
        };
        let Ok(parsed) = DigestAuthorization::parse(&value) else { return Err(self.simple(req, 403)) };
        let chosen = candidates.iter().copied().find(|&i| {
            self.cfg.trunks[i]
                .digest
                .as_ref()
                .is_some_and(|d| d.user == parsed.username && d.realm == parsed.realm)
        });
        let Some(i) = chosen else { return Err(self.simple(req, 403)) };
        let Some(creds) = self.cfg.trunks[i].digest.clone() else { return Err(self.simple(req, 403)) };
        match verify(&mut self.nonces, now, &creds, req.method.as_str(), &req.uri, &value) {
            Ok(()) => Ok(i),
            Err(e) if e.wants_challenge() => Err(challenge(self, creds.realm, e == AuthError::StaleNonce)),
            Err(_) => Err(self.simple(req, 403)),
        }
    }

    // ------------------------------------------------------------ in dialog

    fn on_in_dialog(&mut self, now: Instant, h: u64, peer: Peer, src: Peer, req: Request) {
        let Some(call) = self.calls.get_mut(&h) else { return };
        if src.conn.is_some() {
            // A carrier may reconnect: follow the newest connection.
            call.peer = src;
        }
        if let Err(DialogError::CSeqOutOfOrder { .. }) = call.dialog.accept_remote_cseq(&req) {
            let tag = call.dialog.id.local_tag.clone();
            let resp = self.response(&req, 500, Some(&tag));
            self.answer_new(now, peer, &req, resp);
            return;
        }
        let tag = call.dialog.id.local_tag.clone();
        match &req.method {
            Method::Bye => self.on_bye(now, h, peer, &req, &tag),
            Method::Invite => self.on_reinvite(now, h, peer, req, &tag),
            Method::Info => self.on_info(now, h, peer, &req, &tag),
            Method::Notify => self.on_notify(now, h, peer, &req, &tag),
            Method::Options => {
                let resp = self
                    .response(&req, 200, Some(&tag))
                    .with_header("Allow", ALLOW)
                    .with_header("Accept", ACCEPT)
                    .with_header("Supported", "");
                self.answer_new(now, peer, &req, resp);
            }
            Method::Refer => {
                let resp = self.response(&req, 403, Some(&tag));
                self.answer_new(now, peer, &req, resp);
            }
            m if known_but_not_allowed(m) => {
                let resp = self.response(&req, 405, Some(&tag)).with_header("Allow", ALLOW);
                self.answer_new(now, peer, &req, resp);
            }
            _ => {
                let resp = self.response(&req, 501, Some(&tag)).with_header("Allow", ALLOW);
                self.answer_new(now, peer, &req, resp);
            }
        }
    }

    /// §15.1.2: 200 to the BYE; an unanswered INVITE gets 487.
    fn on_bye(&mut self, now: Instant, h: u64, peer: Peer, req: &Request, tag: &str) {
        let ok = self.response(req, 200, Some(tag));
        self.answer_new(now, peer, req, ok);
        self.fail_pending_invites(now, h, 487);
        self.end_call(h, Some(EndReason::ByeFromCaller));
    }

    /// Final `status` to the unanswered initial INVITE and any unanswered
    /// re-INVITE of call `h`.
    pub(super) fn fail_pending_invites(&mut self, now: Instant, h: u64, status: u16) {
        let Some(call) = self.calls.get_mut(&h) else { return };
        let tag = call.dialog.id.local_tag.clone();
        let mut pending = Vec::new();
        if call.phase == Phase::Offered {
            pending.push((call.invite_key.clone(), call.invite.clone()));
        }
        pending.extend(call.reinvite.take());
        for (key, invite) in pending {
            let resp = self.response(&invite, status, Some(&tag));
            self.respond(now, &key, resp);
        }
    }

    /// §14.2 re-INVITE: 491 while an INVITE is unfinished on the dialog,
    /// else 100 Trying, target refresh and [`UasEvent::ReInvite`].
    fn on_reinvite(&mut self, now: Instant, h: u64, peer: Peer, req: Request, tag: &str) {
        let Some(key) = server_key(&req, &Method::Invite) else { return };
        let Some(call) = self.calls.get(&h) else { return };
        let busy = call.phase != Phase::Confirmed || call.reinvite.is_some() || call.reinvite_unacked.is_some();
        if busy {
            let resp = self.response(&req, 491, Some(tag));
            self.answer_new(now, peer, &req, resp);
            return;
        }
        if !self.open_server_tx(&key, &req, peer, Some(h)) {
            return;
        }
        let trying = self.response(&req, 100, None);
        self.respond(now, &key, trying);
        let sdp_offer = sdp_of(&req);
        if let Some(call) = self.calls.get_mut(&h) {
            call.dialog.refresh_target(&req);
            call.reinvite = Some((key, req));
        }
        self.emit(UasEvent::ReInvite { call: SipCallId(h), sdp_offer });
    }

    /// INFO: DTMF bodies become [`UasEvent::Dtmf`]; an empty INFO is a
    /// keep-alive (200); other bodies 415.
    fn on_info(&mut self, now: Instant, h: u64, peer: Peer, req: &Request, tag: &str) {
        let ct = req.headers.content_type().ok().flatten();
        let status = match (&ct, body_text(req)) {
            (_, None) => 200,
            (Some(t), Some(body)) if t.is("application", "dtmf-relay") || t.is("application", "dtmf") => {
                match parse_dtmf(t.is("application", "dtmf-relay"), &body) {
                    Some((digit, duration_ms)) => {
                        self.emit(UasEvent::Dtmf { call: SipCallId(h), digit, duration_ms });
                        200
                    }
                    None => 400,
                }
            }
            _ => 415,
        };
        let mut resp = self.response(req, status, Some(tag));
        if status == 415 {
            resp.headers.push("Accept", "application/dtmf-relay, application/dtmf");
        }
        self.answer_new(now, peer, req, resp);
    }

    /// RFC 3515 §2.4.5: NOTIFY with `Event: refer` and a message/sipfrag
    /// body for the REFER we sent.
    fn on_notify(&mut self, now: Instant, h: u64, peer: Peer, req: &Request, tag: &str) {
        let event_is_refer = req
            .headers
            .get("Event")
            .and_then(|e| e.split(';').next())
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("refer"));
        let refer = self.calls.get(&h).map(|c| c.refer).unwrap_or(ReferState::Idle);
        let frag = req
            .headers
            .content_type()
            .ok()
            .flatten()
            .filter(|t| t.is("message", "sipfrag"))
            .and_then(|_| body_text(req))
            .and_then(|b| sipfrag_status(&b));
        let status = match (event_is_refer, refer, frag) {
            (false, _, _) => 489,
            (true, ReferState::Idle, _) => 481,
            (true, _, None) => 400,
            (true, _, Some(_)) => 200,
        };
        let mut resp = self.response(req, status, Some(tag));
        if status == 489 {
            resp.headers.push("Allow-Events", "refer");
        }
        self.answer_new(now, peer, req, resp);
        if let (200, Some(code)) = (status, frag) {
            let terminated = req
                .headers
                .get("Subscription-State")
                .is_some_and(|s| s.trim_start().to_ascii_lowercase().starts_with("terminated"));
            let final_ = code >= 200 || terminated;
            if final_ {
                if let Some(c) = self.calls.get_mut(&h) {
                    c.refer = ReferState::Idle;
                }
            }
            self.emit(UasEvent::TransferProgress { call: SipCallId(h), status: code, final_ });
        }
    }

    // ------------------------------------------------ our requests' results

    pub(super) fn on_client_result(&mut self, _now: Instant, h: u64, method: &Method, status: u16) {
        if status < 200 {
            return;
        }
        match method {
            Method::Bye if self.calls.get(&h).is_some_and(|c| c.phase == Phase::Ending) => {
                self.end_call(h, Some(EndReason::ByeFromUs));
            }
            Method::Refer => {
                let Some(call) = self.calls.get_mut(&h) else { return };
                if call.refer != ReferState::Pending {
                    return;
                }
                let final_ = status >= 300;
                call.refer = if final_ { ReferState::Idle } else { ReferState::Accepted };
                self.emit(UasEvent::TransferProgress { call: SipCallId(h), status, final_ });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_bodies() {
        assert_eq!(parse_dtmf(true, "Signal=5\r\nDuration=160\r\n"), Some(('5', 160)));
        assert_eq!(parse_dtmf(true, "signal = #\nduration= 250"), Some(('#', 250)));
        assert_eq!(parse_dtmf(true, "Signal=11"), Some(('#', 0)));
        assert_eq!(parse_dtmf(true, "Signal=d"), Some(('D', 0)));
        assert_eq!(parse_dtmf(true, "Duration=160"), None);
        assert_eq!(parse_dtmf(true, "Signal=99"), None);
        assert_eq!(parse_dtmf(false, "7\r\n"), Some(('7', 0)));
        assert_eq!(parse_dtmf(false, "10"), Some(('*', 0)));
        assert_eq!(parse_dtmf(false, "xy"), None);
    }

    #[test]
    fn sipfrag() {
        assert_eq!(sipfrag_status("SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status("SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status("SIP/2.0 603 Declined\r\nVia: x"), Some(603));
        assert_eq!(sipfrag_status("HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status("SIP/2.0 2000 OK"), None);
        assert_eq!(sipfrag_status(""), None);
    }
}
