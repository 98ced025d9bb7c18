//! UAS-side dialog state (RFC 3261 §12): the dialog id (Call-ID, local and
//! remote tags), local and remote CSeq, the remote target (the peer's
//! Contact), the route set (the INVITE's Record-Route, §12.1.1) and the
//! secure flag; building in-dialog requests (§12.2.1.1, e.g. BYE and REFER)
//! and checking in-dialog requests (§12.2.2: matching, CSeq ordering, target
//! refresh).
//!
//! Only the UAS role exists: this node never sends an initial INVITE, so a
//! dialog is always created from a received INVITE and the 1xx/2xx we send.

use super::message::{Method, Request};
use super::typed::{Contacts, NameAddr};
use super::uri::Uri;

/// Why an INVITE cannot create a dialog, or an in-dialog request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("request has no usable {0}")]
    MissingHeader(&'static str),
    #[error("Contact must hold exactly one SIP URI")]
    BadContact,
    /// §12.2.2: a CSeq lower than the last one seen; answer 500.
    #[error("CSeq {got} is lower than the dialog's remote CSeq {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
    #[error("request does not belong to this dialog")]
    NotThisDialog,
}

/// The dialog id seen from this side (§12): Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The id an incoming request would belong to: Call-ID, To tag (ours),
    /// From tag (theirs). `None` without a To tag or with bad headers.
    pub fn of_incoming(req: &Request) -> Option<DialogId> {
        let h = &req.headers;
        let to = h.to_addr().ok()?;
        let local_tag = to.tag()?.to_string();
        let remote_tag = h.from_addr().ok()?.tag().unwrap_or("").to_string();
        Some(DialogId {
            call_id: h.call_id().ok()?.to_string(),
            local_tag,
            remote_tag,
        })
    }
}

/// Early (1xx with tag sent) or confirmed (2xx sent; ACK may be pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// One dialog (§12.1.1 UAS construction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    /// Our URI: the INVITE's To URI (the From of our requests).
    pub local_uri: Uri,
    /// The caller's URI: the INVITE's From URI (the To of our requests).
    pub remote_uri: Uri,
    /// Display name of the remote party, kept for our To header.
    pub remote_display: Option<String>,
    /// Last CSeq we used (§12.1.1: chosen by us; starts empty, here a seeded
    /// value).
    pub local_cseq: u32,
    /// Last CSeq the peer used.
    pub remote_cseq: u32,
    /// The peer's Contact (§12.1.1), refreshed by re-INVITE (§12.2.2).
    pub remote_target: Uri,
    /// Record-Route values of the INVITE, in order (§12.1.1 for a UAS).
    pub route_set: Vec<String>,
    /// Request-URI was sips and the request arrived over TLS (§12.1.1).
    pub secure: bool,
}

/// Pulls the single Contact URI out of a request (§8.1.1.8: INVITE must
/// carry exactly one).
fn single_contact(req: &Request) -> Result<Uri, DialogError> {
    match req.headers.contact() {
        Ok(Some(Contacts::List(list))) if list.len() == 1 => {
            let uri = list.into_iter().next().map(|n| n.uri).ok_or(DialogError::BadContact)?;
            match uri {
                Uri::Sip(_) => Ok(uri),
                _ => Err(DialogError::BadContact),
            }
        }
        Ok(None) => Err(DialogError::MissingHeader("Contact")),
        _ => Err(DialogError::BadContact),
    }
}

impl Dialog {
    /// The dialog a 1xx/2xx to `invite` creates, with our tag `local_tag`
    /// and our first CSeq `initial_cseq` (§12.1.1, §8.1.1.5).
    pub fn from_invite(invite: &Request, local_tag: &str, initial_cseq: u32) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let from = h.from_addr().map_err(|_| DialogError::MissingHeader("From"))?;
        let to = h.to_addr().map_err(|_| DialogError::MissingHeader("To"))?;
        let call_id = h.call_id().map_err(|_| DialogError::MissingHeader("Call-ID"))?;
        let cseq = h.cseq().map_err(|_| DialogError::MissingHeader("CSeq"))?;
        let remote_target = single_contact(invite)?;
        let route_set = h.values("Record-Route").into_iter().map(str::to_string).collect();
        let secure = matches!(&invite.uri, Uri::Sip(s) if s.secure);
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: from.tag().unwrap_or("").to_string(),
            },
            state: DialogState::Early,
            local_uri: to.uri,
            remote_uri: from.uri,
            remote_display: from.display_name,
            local_cseq: initial_cseq,
            remote_cseq: cseq.seq,
            remote_target,
            route_set,
            secure,
        })
    }

    /// Whether `req` belongs to this dialog (§12.2.2: Call-ID, To tag = our
    /// tag, From tag = their tag).
    pub fn matches(&self, req: &Request) -> bool {
        DialogId::of_incoming(req).is_some_and(|id| id == self.id)
    }

    /// Checks and records the CSeq of an in-dialog request other than ACK
    /// and CANCEL (§12.2.2): lower than the last one is out of order (500).
    pub fn accept_remote_cseq(&mut self, req: &Request) -> Result<(), DialogError> {
        if !self.matches(req) {
            return Err(DialogError::NotThisDialog);
        }
        if matches!(req.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let got = req.headers.cseq().map_err(|_| DialogError::MissingHeader("CSeq"))?.seq;
        if got < self.remote_cseq {
            return Err(DialogError::CSeqOutOfOrder { got, last: self.remote_cseq });
        }
        self.remote_cseq = got;
        Ok(())
    }

    /// A target refresh (re-INVITE, §12.2.2) replaces the remote target when
    /// it carries a usable Contact.
    pub fn refresh_target(&mut self, req: &Request) {
        if let Ok(uri) = single_contact(req) {
            self.remote_target = uri;
        }
    }

    /// Builds an in-dialog request (§12.2.1.1): Request-URI and Route from
    /// the remote target and route set (loose or strict routing, §12.2.1.1),
    /// From/To with tags, Call-ID, the next local CSeq, Max-Forwards 70 and
    /// one Via (`SIP/2.0/<transport> <sent_by>;branch=<branch>;rport`).
    /// The caller adds Contact, User-Agent and method-specific headers.
    pub fn build_request(&mut self, method: Method, transport: &str, sent_by: &str, branch: &str) -> Request {
        self.local_cseq = self.local_cseq.wrapping_add(1).max(1);
        let first_route = self.route_set.first().and_then(|r| NameAddr::parse(r).ok());
        let strict = first_route.as_ref().is_some_and(|r| match &r.uri {
            Uri::Sip(s) => !s.lr(),
            _ => false,
        });
        let (uri, routes): (Uri, Vec<String>) = match (strict, first_route) {
            (true, Some(first)) => {
                // §12.2.1.1 strict routing: the first route's URI becomes
                // the Request-URI and the remote target goes last in Route.
                let mut rest: Vec<String> = self.route_set[1..].to_vec();
                rest.push(format!("<{}>", self.remote_target));
                (first.uri, rest)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        };
        let mut req = Request::new(method.clone(), uri);
        let h = &mut req.headers;
        h.push("Via", format!("SIP/2.0/{transport} {sent_by};branch={branch};rport"));
        h.push("Max-Forwards", "70");
        for r in routes {
            h.push("Route", r);
        }
        let mut from = NameAddr::new(self.local_uri.clone());
        from.params.push("tag", Some(self.id.local_tag.clone()));
        h.push("From", from.to_string());
        let mut to = NameAddr::new(self.remote_uri.clone());
        to.display_name = self.remote_display.clone();
        if !self.id.remote_tag.is_empty() {
            to.params.push("tag", Some(self.id.remote_tag.clone()));
        }
        h.push("To", to.to_string());
        h.push("Call-ID", self.id.call_id.clone());
        h.push("CSeq", format!("{} {}", self.local_cseq, method));
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sip::parse::{parse_message, Limits};

    const INVITE: &str = "INVITE sip:+15550100@edge.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKabc;rport\r\n\
Record-Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>\r\n\
Record-Route: <sip:p3.example.net;lr>\r\n\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@carrier.example.net>;tag=from1\r\n\
To: <sip:+15550100@edge.example.com>\r\nCall-ID: call-1@carrier\r\nCSeq: 10 INVITE\r\n\
Contact: <sip:alice@198.51.100.7:5060>\r\nContent-Length: 0\r\n\r\n";

    fn req(text: &str) -> Request {
        parse_message(text.as_bytes(), &Limits::default()).unwrap().0.as_request().unwrap().clone()
    }

    #[test]
    fn built_from_invite() {
        let d = Dialog::from_invite(&req(INVITE), "loc1", 100).unwrap();
        assert_eq!(d.id.call_id, "call-1@carrier");
        assert_eq!(d.id.remote_tag, "from1");
        assert_eq!(d.remote_cseq, 10);
        assert_eq!(d.route_set, vec!["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>", "<sip:p3.example.net;lr>"]);
        assert_eq!(d.remote_target.to_string(), "sip:alice@198.51.100.7:5060");
        let no_contact = INVITE.replace("Contact: <sip:alice@198.51.100.7:5060>\r\n", "");
        assert_eq!(Dialog::from_invite(&req(&no_contact), "l", 1), Err(DialogError::MissingHeader("Contact")));
        let two = INVITE.replace("Contact: <sip:alice@198.51.100.7:5060>", "Contact: <sip:a@h>, <sip:b@h>");
        assert_eq!(Dialog::from_invite(&req(&two), "l", 1), Err(DialogError::BadContact));
    }

    #[test]
    fn bye_uses_loose_route_set_and_increments_cseq() {
        let mut d = Dialog::from_invite(&req(INVITE), "loc1", 100).unwrap();
        let bye = d.build_request(Method::Bye, "UDP", "203.0.113.5:5060", "z9hG4bKxyz");
        assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.7:5060");
        let routes: Vec<&str> = bye.headers.get_all("Route").collect();
        assert_eq!(routes, vec!["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>", "<sip:p3.example.net;lr>"]);
        assert_eq!(bye.headers.cseq().unwrap().seq, 101);
        assert_eq!(bye.headers.from_addr().unwrap().tag(), Some("loc1"));
        assert_eq!(bye.headers.to_addr().unwrap().tag(), Some("from1"));
        assert_eq!(bye.headers.to_addr().unwrap().display_name.as_deref(), Some("Alice"));
        assert_eq!(bye.headers.top_via().unwrap().branch(), Some("z9hG4bKxyz"));
        let refer = d.build_request(Method::Refer, "UDP", "203.0.113.5:5060", "z9hG4bKxy2");
        assert_eq!(refer.headers.cseq().unwrap().to_string(), "102 REFER");
        // The request round-trips through the parser.
        let bytes = refer.to_bytes();
        assert!(parse_message(&bytes, &Limits::default()).is_ok());
    }

    #[test]
    fn strict_route_goes_into_request_uri() {
        let strict = INVITE.replace("<sip:p1.example.net;lr>, ", "<sip:p1.example.net>, ");
        let mut d = Dialog::from_invite(&req(&strict), "loc1", 1).unwrap();
        let bye = d.build_request(Method::Bye, "UDP", "h", "z9hG4bK1");
        assert_eq!(bye.uri.to_string(), "sip:p1.example.net");
        let routes: Vec<&str> = bye.headers.get_all("Route").collect();
        assert_eq!(routes.last(), Some(&"<sip:alice@198.51.100.7:5060>"));
        assert_eq!(routes.len(), 3);
    }

    #[test]
    fn matching_and_cseq_ordering() {
        let mut d = Dialog::from_invite(&req(INVITE), "loc1", 1).unwrap();
        let bye = INVITE
            .replace("INVITE sip", "BYE sip")
            .replace("To: <sip:+15550100@edge.example.com>", "To: <sip:+15550100@edge.example.com>;tag=loc1");
        let ok = req(&bye.replace("CSeq: 10 INVITE", "CSeq: 11 BYE"));
        assert!(d.matches(&ok));
        assert_eq!(d.accept_remote_cseq(&ok), Ok(()));
        assert_eq!(d.remote_cseq, 11);
        let old = req(&bye.replace("CSeq: 10 INVITE", "CSeq: 9 BYE"));
        assert_eq!(d.accept_remote_cseq(&old), Err(DialogError::CSeqOutOfOrder { got: 9, last: 11 }));
        let other = req(&bye.replace("tag=loc1", "tag=zzz"));
        assert!(!d.matches(&other));
        assert_eq!(d.accept_remote_cseq(&other), Err(DialogError::NotThisDialog));
        // ACK does not move the CSeq.
        let ack = req(&bye.replace("BYE sip", "ACK sip").replace("CSeq: 10 INVITE", "CSeq: 10 ACK"));
        assert_eq!(d.accept_remote_cseq(&ack), Ok(()));
        assert_eq!(d.remote_cseq, 11);
    }

    #[test]
    fn target_refresh() {
        let mut d = Dialog::from_invite(&req(INVITE), "loc1", 1).unwrap();
        let re = req(&INVITE.replace("198.51.100.7:5060>", "198.51.100.9:5070>"));
        d.refresh_target(&re);
        assert_eq!(d.remote_target.to_string(), "sip:alice@198.51.100.9:5070");
    }
}
