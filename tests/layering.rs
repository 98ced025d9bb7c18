//! Architecture invariants that a grep can check: the sans-IO layers never
//! touch the async runtime, sockets, threads or the clock (time and IO enter
//! as arguments and results). See ARCHITECTURE.md, "Invariants".

use std::path::{Path, PathBuf};

const SANS_IO_LAYERS: &[&str] = &["src/media", "src/flow", "src/proto", "src/call", "src/outcome"];
const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "UdpSocket::bind",
    "TcpListener::bind",
    "Instant::now",
    "SystemTime::now",
    "thread::spawn",
    "std::thread",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            // `tests.rs` files are `#[cfg(test)] mod tests;` bodies: test-only code.
            out.push(path);
        }
    }
}

#[test]
fn sans_io_layers_stay_free_of_runtime_sockets_threads_and_clocks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for layer in SANS_IO_LAYERS {
        rust_files(&root.join(layer), &mut files);
    }
    assert!(files.len() >= 5, "found only {} files in the sans-IO layers", files.len());
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Test modules may use the clock to measure themselves; everything
        // before `#[cfg(test)]` is production code.
        let production = text.split("#[cfg(test)]").next().unwrap_or("");
        for (no, line) in production.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for needle in FORBIDDEN {
                if code.contains(needle) {
                    violations.push(format!("{}:{}: {needle}: {}", file.strip_prefix(root).unwrap().display(), no + 1, line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "sans-IO layers must not use these:\n{}", violations.join("\n"));
}
