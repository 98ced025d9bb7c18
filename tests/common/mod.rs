//! Helpers shared by the integration tests.
#![allow(dead_code)]
pub mod cdp;
pub mod daemon;
pub mod rtp_peer;
pub mod scoring;
pub mod sipp;
