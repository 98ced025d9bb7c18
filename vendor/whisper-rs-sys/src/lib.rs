//! whisper.cpp FFI bindings, built against the ggml that `llama-cpp-sys-2`
//! bundles (voice-edge patch of whisper-rs-sys 0.15.0).
#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(clippy::all)]

// Pulls llama-cpp-sys-2's static ggml into the link, which libwhisper needs.
extern crate llama_cpp_sys_2 as _;

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
