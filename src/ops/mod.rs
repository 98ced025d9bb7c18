//! Operations: configuration loading and validation, logging (journald or
//! terminal). Metrics, systemd notify and the watchdog join here.

pub mod config;
pub mod logging;
pub mod metrics;
pub mod network_config;
pub mod systemd;
pub mod webrtc_config;
