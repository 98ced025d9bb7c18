//! SIP transactions as pure state machines (RFC 3261 §17): the INVITE
//! server transaction (§17.2.1, with the "Accepted" state of RFC 6026 §8.5),
//! the non-INVITE server transaction (§17.2.2) and the non-INVITE client
//! transaction (§17.1.2) for requests this node sends itself (BYE, REFER).
//!
//! Each machine is `(state, event) -> actions`: [`ServerInviteTx::handle`],
//! [`ServerNonInviteTx::handle`] and [`ClientNonInviteTx::handle`] take the
//! current time and one event and return the [`TxAction`]s the owner must
//! carry out (send bytes, tell the transaction user, forget the
//! transaction). Timers are deadlines the owner polls with `next_deadline`
//! and reports with the `Timeout` event; nothing here reads a clock.
//!
//! Timers (§17, table 4 of Appendix A), with T1/T2/T4 from [`Timers`]:
//!
//! | timer | machine | unreliable | reliable (TCP) |
//! |---|---|---|---|
//! | G | INVITE server, non-2xx retransmit | T1 doubling to T2 | not used |
//! | G (RFC 6026) | INVITE server, 2xx retransmit in Accepted | T1 doubling to T2 | not used |
//! | H | INVITE server, wait for ACK | 64*T1 | 64*T1 |
//! | give-up (RFC 6026 Timer L role) | Accepted, no ACK for the 2xx | 64*T1 | 64*T1 |
//! | L | Accepted, absorb retransmits after ACK | 64*T1 from the 2xx | same |
//! | I | INVITE server, Confirmed | T4 | 0 |
//! | J | non-INVITE server, Completed | 64*T1 | 0 |
//! | E | non-INVITE client, retransmit | T1 doubling to T2 (T2 in Proceeding) | not used |
//! | F | non-INVITE client, timeout | 64*T1 | 64*T1 |
//! | K | non-INVITE client, Completed | T4 | 0 |
//!
//! Choice: RFC 3261 §13.3.1.4 has the UAS core retransmit a 2xx over any
//! transport; this node, like the rest of the transaction layer, leaves
//! retransmission to TCP on reliable transports and only keeps the give-up
//! timer there.

use std::time::{Duration, Instant};

/// The RFC 3261 base timer values (§17.1.1.1, Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: Timers B, F, H, J (unreliable) and L.
    pub fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// What the owner of a transaction must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxAction {
    /// Send these bytes for the first time.
    Send(Vec<u8>),
    /// Send these bytes again (a retransmission: count it).
    Retransmit(Vec<u8>),
    /// Server INVITE: the ACK for the 2xx arrived (RFC 6026 Accepted).
    Acked,
    /// Client: the response just received is new; pass it to the TU.
    Deliver,
    /// Timer H (no ACK for a non-2xx final), the Accepted give-up (no ACK
    /// for a 2xx) or Timer F (no final response): tell the TU.
    TimedOut,
    /// The transaction is over; forget it.
    Terminated,
}

/// Adds `d` to `now`, or `None` for a zero wait (the caller terminates at
/// once).
fn after(now: Instant, d: Duration) -> Option<Instant> {
    if d.is_zero() {
        None
    } else {
        now.checked_add(d)
    }
}

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| d <= now)
}

fn earliest(deadlines: &[Option<Instant>]) -> Option<Instant> {
    deadlines.iter().flatten().min().copied()
}

// ------------------------------------------------------ INVITE server (§17.2.1)

/// States of the INVITE server transaction (§17.2.1 figure 7, RFC 6026 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    Proceeding,
    /// A 3xx-6xx was sent; waiting for the ACK.
    Completed,
    /// ACK received for the 3xx-6xx; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// A 2xx was sent (RFC 6026); retransmitted until ACK.
    Accepted,
    Terminated,
}

/// Events fed to [`ServerInviteTx::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerInviteEvent {
    /// The INVITE arrived again.
    RequestRetransmitted,
    /// An ACK matched this transaction (non-2xx ACK by branch, or the 2xx
    /// ACK routed here by the dialog).
    Ack,
    /// The TU sends a 1xx.
    SendProvisional(Vec<u8>),
    /// The TU sends a final response with `status`.
    SendFinal { status: u16, bytes: Vec<u8> },
    /// The owner's clock passed [`ServerInviteTx::next_deadline`].
    Timeout,
}

/// RFC 3261 §17.2.1 + RFC 6026 INVITE server transaction.
#[derive(Debug, Clone)]
pub struct ServerInviteTx {
    state: ServerInviteState,
    reliable: bool,
    timers: Timers,
    last_response: Option<Vec<u8>>,
    /// Timer G.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer H, or the Accepted give-up.
    give_up_at: Option<Instant>,
    /// Timer I (Confirmed) or L (Accepted).
    end_at: Option<Instant>,
    acked: bool,
}

impl ServerInviteTx {
    /// A transaction in Proceeding (the TU sends 100 Trying itself).
    pub fn new(reliable: bool, timers: Timers) -> Self {
        ServerInviteTx {
            state: ServerInviteState::Proceeding,
            reliable,
            timers,
            last_response: None,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            give_up_at: None,
            end_at: None,
            acked: false,
        }
    }

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// Whether a final response has been sent.
    pub fn is_final_sent(&self) -> bool {
        self.state != ServerInviteState::Proceeding
    }

    /// Whether the ACK for a 2xx has arrived.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        earliest(&[self.retransmit_at, self.give_up_at, self.end_at])
    }

    fn terminate(&mut self, out: &mut Vec<TxAction>) {
        self.state = ServerInviteState::Terminated;
        self.retransmit_at = None;
        self.give_up_at = None;
        self.end_at = None;
        out.push(TxAction::Terminated);
    }

    fn resend_last(&self, out: &mut Vec<TxAction>) {
        if let Some(b) = &self.last_response {
            out.push(TxAction::Retransmit(b.clone()));
        }
    }

    pub fn handle(&mut self, now: Instant, event: ServerInviteEvent) -> Vec<TxAction> {
        use ServerInviteEvent as E;
        use ServerInviteState as S;
        let mut out = Vec::new();
        match (self.state, event) {
            (S::Proceeding, E::SendProvisional(b)) => {
                self.last_response = Some(b.clone());
                out.push(TxAction::Send(b));
            }
            (S::Proceeding, E::SendFinal { status, bytes }) => {
                self.last_response = Some(bytes.clone());
                out.push(TxAction::Send(bytes));
                self.retransmit_interval = self.timers.t1;
                if !self.reliable {
                    self.retransmit_at = after(now, self.timers.t1);
                }
                self.give_up_at = after(now, self.timers.t1_x64());
                if (200..300).contains(&status) {
                    self.state = S::Accepted;
                    // Timer L: how long retransmissions are absorbed.
                    self.end_at = after(now, self.timers.t1_x64());
                } else {
                    self.state = S::Completed;
                }
            }
            (S::Proceeding, E::RequestRetransmitted) => self.resend_last(&mut out),
            (S::Completed, E::RequestRetransmitted) => self.resend_last(&mut out),
            (S::Accepted, E::RequestRetransmitted) if !self.acked => self.resend_last(&mut out),
            (S::Completed, E::Ack) => {
                self.state = S::Confirmed;
                self.retransmit_at = None;
                self.give_up_at = None;
                let wait = if self.reliable { Duration::ZERO } else { self.timers.t4 };
                self.end_at = after(now, wait);
                if self.end_at.is_none() {
                    self.terminate(&mut out);
                }
            }
            (S::Accepted, E::Ack) if !self.acked => {
                self.acked = true;
                self.retransmit_at = None;
                self.give_up_at = None;
                out.push(TxAction::Acked);
                if self.end_at.is_none() {
                    self.terminate(&mut out);
                }
            }
            (S::Completed | S::Accepted, E::Timeout) => {
                if due(self.give_up_at, now) {
                    out.push(TxAction::TimedOut);
                    self.terminate(&mut out);
                    return out;
                }
                if due(self.end_at, now) {
                    self.terminate(&mut out);
                    return out;
                }
                if due(self.retransmit_at, now) {
                    self.resend_last(&mut out);
                    self.retransmit_interval = (self.retransmit_interval * 2).min(self.timers.t2);
                    self.retransmit_at = now.checked_add(self.retransmit_interval);
                }
            }
            (S::Confirmed, E::Timeout) if due(self.end_at, now) => self.terminate(&mut out),
            // Everything else is absorbed: ACKs in Confirmed or after the 2xx
            // ACK, retransmissions after the 2xx ACK, late TU sends.
            _ => {}
        }
        out
    }
}

// -------------------------------------------------- non-INVITE server (§17.2.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerNonInviteEvent {
    RequestRetransmitted,
    SendProvisional(Vec<u8>),
    SendFinal(Vec<u8>),
    Timeout,
}

/// RFC 3261 §17.2.2 non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct ServerNonInviteTx {
    state: ServerNonInviteState,
    reliable: bool,
    timers: Timers,
    last_response: Option<Vec<u8>>,
    /// Timer J.
    end_at: Option<Instant>,
}

impl ServerNonInviteTx {
    pub fn new(reliable: bool, timers: Timers) -> Self {
        ServerNonInviteTx {
            state: ServerNonInviteState::Trying,
            reliable,
            timers,
            last_response: None,
            end_at: None,
        }
    }

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.end_at
    }

    pub fn handle(&mut self, now: Instant, event: ServerNonInviteEvent) -> Vec<TxAction> {
        use ServerNonInviteEvent as E;
        use ServerNonInviteState as S;
        let mut out = Vec::new();
        match (self.state, event) {
            (S::Trying | S::Proceeding, E::SendProvisional(b)) => {
                self.state = S::Proceeding;
                self.last_response = Some(b.clone());
                out.push(TxAction::Send(b));
            }
            (S::Trying | S::Proceeding, E::SendFinal(b)) => {
                self.last_response = Some(b.clone());
                out.push(TxAction::Send(b));
                self.state = S::Completed;
                let wait = if self.reliable { Duration::ZERO } else { self.timers.t1_x64() };
                self.end_at = after(now, wait);
                if self.end_at.is_none() {
                    self.state = S::Terminated;
                    out.push(TxAction::Terminated);
                }
            }
            (S::Proceeding | S::Completed, E::RequestRetransmitted) => {
                if let Some(b) = &self.last_response {
                    out.push(TxAction::Retransmit(b.clone()));
                }
            }
            (S::Completed, E::Timeout) if due(self.end_at, now) => {
                self.state = S::Terminated;
                self.end_at = None;
                out.push(TxAction::Terminated);
            }
            _ => {}
        }
        out
    }
}

// -------------------------------------------------- non-INVITE client (§17.1.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientNonInviteEvent {
    /// A response with this status matched the transaction.
    Response(u16),
    Timeout,
}

/// RFC 3261 §17.1.2 non-INVITE client transaction.
#[derive(Debug, Clone)]
pub struct ClientNonInviteTx {
    state: ClientNonInviteState,
    reliable: bool,
    timers: Timers,
    request: Vec<u8>,
    /// Timer E.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer F.
    give_up_at: Option<Instant>,
    /// Timer K.
    end_at: Option<Instant>,
}

impl ClientNonInviteTx {
    /// Starts the transaction: the returned actions send the request.
    pub fn start(now: Instant, reliable: bool, timers: Timers, request: Vec<u8>) -> (Self, Vec<TxAction>) {
        let tx = ClientNonInviteTx {
            state: ClientNonInviteState::Trying,
            reliable,
            timers,
            request: request.clone(),
            retransmit_at: if reliable { None } else { after(now, timers.t1) },
            retransmit_interval: timers.t1,
            give_up_at: after(now, timers.t1_x64()),
            end_at: None,
        };
        (tx, vec![TxAction::Send(request)])
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        earliest(&[self.retransmit_at, self.give_up_at, self.end_at])
    }

    fn terminate(&mut self, out: &mut Vec<TxAction>) {
        self.state = ClientNonInviteState::Terminated;
        self.retransmit_at = None;
        self.give_up_at = None;
        self.end_at = None;
        out.push(TxAction::Terminated);
    }

    pub fn handle(&mut self, now: Instant, event: ClientNonInviteEvent) -> Vec<TxAction> {
        use ClientNonInviteEvent as E;
        use ClientNonInviteState as S;
        let mut out = Vec::new();
        match (self.state, event) {
            (S::Trying | S::Proceeding, E::Response(status)) if status < 200 => {
                self.state = S::Proceeding;
                out.push(TxAction::Deliver);
            }
            (S::Trying | S::Proceeding, E::Response(_)) => {
                out.push(TxAction::Deliver);
                self.state = S::Completed;
                self.retransmit_at = None;
                self.give_up_at = None;
                let wait = if self.reliable { Duration::ZERO } else { self.timers.t4 };
                self.end_at = after(now, wait);
                if self.end_at.is_none() {
                    self.terminate(&mut out);
                }
            }
            (S::Trying | S::Proceeding, E::Timeout) => {
                if due(self.give_up_at, now) {
                    out.push(TxAction::TimedOut);
                    self.terminate(&mut out);
                    return out;
                }
                if due(self.retransmit_at, now) {
                    out.push(TxAction::Retransmit(self.request.clone()));
                    self.retransmit_interval = if self.state == S::Proceeding {
                        self.timers.t2
                    } else {
                        (self.retransmit_interval * 2).min(self.timers.t2)
                    };
                    self.retransmit_at = now.checked_add(self.retransmit_interval);
                }
            }
            (S::Completed, E::Timeout) if due(self.end_at, now) => self.terminate(&mut out),
            // Retransmitted responses in Completed are absorbed.
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        Timers::default()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a server INVITE transaction by its own deadlines until `end`,
    /// returning (time offset in ms, action) pairs.
    fn run_invite(tx: &mut ServerInviteTx, t0: Instant, end: Duration) -> Vec<(u128, TxAction)> {
        let mut out = Vec::new();
        while let Some(d) = tx.next_deadline() {
            if d > t0 + end {
                break;
            }
            for a in tx.handle(d, ServerInviteEvent::Timeout) {
                out.push(((d - t0).as_millis(), a));
            }
        }
        out
    }

    #[test]
    fn non_2xx_retransmits_with_timer_g_until_h() {
        let t0 = Instant::now();
        let mut tx = ServerInviteTx::new(false, timers());
        let a = tx.handle(t0, ServerInviteEvent::SendFinal { status: 486, bytes: b"486".to_vec() });
        assert_eq!(a, vec![TxAction::Send(b"486".to_vec())]);
        assert_eq!(tx.state(), ServerInviteState::Completed);
        let log = run_invite(&mut tx, t0, Duration::from_secs(60));
        let resend_times: Vec<u128> = log
            .iter()
            .filter(|(_, a)| matches!(a, TxAction::Retransmit(_)))
            .map(|(t, _)| *t)
            .collect();
        // G: 0.5, 1.5, 3.5, 7.5, then every 4 s (T2) up to H at 32 s.
        assert_eq!(&resend_times[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(resend_times.iter().all(|&t| t < 32_000));
        let last = log.len();
        assert_eq!(log[last - 2], (32_000, TxAction::TimedOut));
        assert_eq!(log[last - 1], (32_000, TxAction::Terminated));
        assert_eq!(tx.state(), ServerInviteState::Terminated);
    }

    #[test]
    fn ack_confirms_then_timer_i_terminates() {
        let t0 = Instant::now();
        let mut tx = ServerInviteTx::new(false, timers());
        tx.handle(t0, ServerInviteEvent::SendFinal { status: 404, bytes: b"404".to_vec() });
        assert!(tx.handle(t0 + ms(100), ServerInviteEvent::Ack).is_empty());
        assert_eq!(tx.state(), ServerInviteState::Confirmed);
        // Absorbs retransmitted INVITEs and ACKs.
        assert!(tx.handle(t0 + ms(200), ServerInviteEvent::RequestRetransmitted).is_empty());
        assert!(tx.handle(t0 + ms(200), ServerInviteEvent::Ack).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(5100)));
        assert_eq!(tx.handle(t0 + ms(5100), ServerInviteEvent::Timeout), vec![TxAction::Terminated]);
    }

    #[test]
    fn reliable_transport_has_no_retransmissions_and_no_wait() {
        let t0 = Instant::now();
        let mut tx = ServerInviteTx::new(true, timers());
        tx.handle(t0, ServerInviteEvent::SendFinal { status: 486, bytes: b"486".to_vec() });
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
        assert_eq!(tx.handle(t0 + ms(10), ServerInviteEvent::Ack), vec![TxAction::Terminated]);

        let mut nict = ServerNonInviteTx::new(true, timers());
        let a = nict.handle(t0, ServerNonInviteEvent::SendFinal(b"200".to_vec()));
        assert_eq!(a, vec![TxAction::Send(b"200".to_vec()), TxAction::Terminated]);

        let (mut c, _) = ClientNonInviteTx::start(t0, true, timers(), b"BYE".to_vec());
        assert_eq!(c.next_deadline(), Some(t0 + ms(32_000)));
        assert_eq!(
            c.handle(t0 + ms(5), ClientNonInviteEvent::Response(200)),
            vec![TxAction::Deliver, TxAction::Terminated]
        );
    }

    #[test]
    fn accepted_retransmits_2xx_until_ack_and_absorbs_after() {
        let t0 = Instant::now();
        let mut tx = ServerInviteTx::new(false, timers());
        tx.handle(t0, ServerInviteEvent::SendProvisional(b"180".to_vec()));
        assert_eq!(
            tx.handle(t0, ServerInviteEvent::RequestRetransmitted),
            vec![TxAction::Retransmit(b"180".to_vec())]
        );
        tx.handle(t0, ServerInviteEvent::SendFinal { status: 200, bytes: b"200".to_vec() });
        assert_eq!(tx.state(), ServerInviteState::Accepted);
        assert_eq!(tx.next_deadline(), Some(t0 + ms(500)));
        assert_eq!(tx.handle(t0 + ms(500), ServerInviteEvent::Timeout), vec![TxAction::Retransmit(b"200".to_vec())]);
        assert_eq!(tx.next_deadline(), Some(t0 + ms(1500)));
        assert_eq!(tx.handle(t0 + ms(700), ServerInviteEvent::Ack), vec![TxAction::Acked]);
        assert!(tx.is_acked());
        // After the ACK: no more retransmissions, duplicates absorbed, L ends it.
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
        assert!(tx.handle(t0 + ms(800), ServerInviteEvent::Ack).is_empty());
        assert!(tx.handle(t0 + ms(800), ServerInviteEvent::RequestRetransmitted).is_empty());
        assert_eq!(tx.handle(t0 + ms(32_000), ServerInviteEvent::Timeout), vec![TxAction::Terminated]);
    }

    #[test]
    fn accepted_gives_up_without_ack() {
        let t0 = Instant::now();
        let mut tx = ServerInviteTx::new(false, timers());
        tx.handle(t0, ServerInviteEvent::SendFinal { status: 200, bytes: b"200".to_vec() });
        let log = run_invite(&mut tx, t0, Duration::from_secs(60));
        let resends = log.iter().filter(|(_, a)| matches!(a, TxAction::Retransmit(_))).count();
        // 0.5, 1.5, 3.5, 7.5, then every 4 s below 32 s: 11.5 ... 31.5.
        assert_eq!(resends, 4 + 6);
        assert_eq!(log[log.len() - 2], (32_000, TxAction::TimedOut));
        assert_eq!(log[log.len() - 1].1, TxAction::Terminated);
    }

    #[test]
    fn non_invite_server_trying_proceeding_completed_j() {
        let t0 = Instant::now();
        let mut tx = ServerNonInviteTx::new(false, timers());
        assert!(tx.handle(t0, ServerNonInviteEvent::RequestRetransmitted).is_empty());
        tx.handle(t0, ServerNonInviteEvent::SendProvisional(b"100".to_vec()));
        assert_eq!(tx.state(), ServerNonInviteState::Proceeding);
        assert_eq!(
            tx.handle(t0, ServerNonInviteEvent::RequestRetransmitted),
            vec![TxAction::Retransmit(b"100".to_vec())]
        );
        tx.handle(t0 + ms(10), ServerNonInviteEvent::SendFinal(b"200".to_vec()));
        assert_eq!(
            tx.handle(t0 + ms(20), ServerNonInviteEvent::RequestRetransmitted),
            vec![TxAction::Retransmit(b"200".to_vec())]
        );
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_010)));
        assert!(tx.handle(t0 + ms(32_000), ServerNonInviteEvent::Timeout).is_empty());
        assert_eq!(tx.handle(t0 + ms(32_010), ServerNonInviteEvent::Timeout), vec![TxAction::Terminated]);
        assert_eq!(tx.state(), ServerNonInviteState::Terminated);
    }

    #[test]
    fn client_timer_e_doubles_then_t2_in_proceeding_and_f_times_out() {
        let t0 = Instant::now();
        let (mut tx, a) = ClientNonInviteTx::start(t0, false, timers(), b"BYE".to_vec());
        assert_eq!(a, vec![TxAction::Send(b"BYE".to_vec())]);
        let mut times = Vec::new();
        let mut proceeding_at = None;
        let mut last = Vec::new();
        while let Some(d) = tx.next_deadline() {
            let acts = tx.handle(d, ClientNonInviteEvent::Timeout);
            if acts.iter().any(|a| matches!(a, TxAction::Retransmit(_))) {
                times.push((d - t0).as_millis());
            }
            if times.len() == 3 && proceeding_at.is_none() {
                proceeding_at = Some(d);
                assert_eq!(tx.handle(d, ClientNonInviteEvent::Response(100)), vec![TxAction::Deliver]);
            }
            last = acts;
        }
        // Trying: 0.5, 1.5, 3.5, 7.5 (T1 doubling to T2); the 1xx at 3.5 s
        // moves to Proceeding, where every step is T2.
        assert_eq!(&times[..4], &[500, 1500, 3500, 7500]);
        assert_eq!(times[4] - times[3], 4000);
        assert_eq!(last, vec![TxAction::TimedOut, TxAction::Terminated]);
    }

    #[test]
    fn client_completed_absorbs_retransmitted_responses_then_k() {
        let t0 = Instant::now();
        let (mut tx, _) = ClientNonInviteTx::start(t0, false, timers(), b"REFER".to_vec());
        assert_eq!(tx.handle(t0 + ms(50), ClientNonInviteEvent::Response(202)), vec![TxAction::Deliver]);
        assert_eq!(tx.state(), ClientNonInviteState::Completed);
        assert!(tx.handle(t0 + ms(60), ClientNonInviteEvent::Response(202)).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(5050)));
        assert_eq!(tx.handle(t0 + ms(5050), ClientNonInviteEvent::Timeout), vec![TxAction::Terminated]);
    }
}
