//! RTP port pairs from the configured range: even RTP port, RTCP on the
//! next one (RFC 3550 §11). A released pair goes to the back of the queue,
//! so a late packet of an ended call does not reach the next call at once.

use std::collections::VecDeque;

pub struct RtpPorts {
    free: VecDeque<u16>,
    capacity: usize,
}

impl RtpPorts {
    /// Pairs in `[lo, hi]` (inclusive; `lo` even, as config validation ensures).
    pub fn new(lo: u16, hi: u16) -> RtpPorts {
        let free: VecDeque<u16> = (lo..hi).step_by(2).filter(|p| p % 2 == 0).collect();
        let capacity = free.len();
        RtpPorts { free, capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn allocate(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    pub fn release(&mut self, port: u16) {
        if !self.free.contains(&port) {
            self.free.push_back(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_reused_last() {
        let mut p = RtpPorts::new(20_000, 20_005);
        assert_eq!(p.capacity(), 3);
        let a = p.allocate().unwrap();
        assert_eq!(a, 20_000);
        assert_eq!(p.allocate(), Some(20_002));
        p.release(a);
        assert_eq!(p.allocate(), Some(20_004));
        assert_eq!(p.allocate(), Some(20_000));
        assert_eq!(p.allocate(), None);
    }
}
