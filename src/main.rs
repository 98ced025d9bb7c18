//! The `voice-edge` binary: parses the command line and reports errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    match voice_edge::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("voice-edge: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
