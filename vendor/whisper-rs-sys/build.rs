//! Builds whisper.cpp as a static library against the ggml that
//! `llama-cpp-sys-2` built and installed (exported to us by its build script
//! as `DEP_LLAMA_GGML_CMAKE_DIR`), and generates the bindings with that ggml's
//! headers. Only `libwhisper.a` is linked here; ggml comes from llama-cpp-sys-2.

use std::env;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let ggml_cmake_dir = PathBuf::from(env::var("DEP_LLAMA_GGML_CMAKE_DIR").expect(
        "DEP_LLAMA_GGML_CMAKE_DIR is not set: llama-cpp-sys-2 did not export its ggml build",
    ));
    // <prefix>/lib/cmake -> <prefix>/include
    let ggml_prefix = ggml_cmake_dir
        .parent()
        .and_then(|p| p.parent())
        .expect("ggml cmake dir has a prefix")
        .to_path_buf();
    let ggml_include = ggml_prefix.join("include");

    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");

    let bindings = bindgen::Builder::default()
        .rust_edition(bindgen::RustEdition::Edition2021)
        .rust_target(bindgen::RustTarget::stable(88, 0).map_err(|e| e.to_string()).unwrap())
        .header("wrapper.h")
        .clang_arg("-I./whisper.cpp/include")
        .clang_arg(format!("-I{}", ggml_include.display()))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on whisper.h (is libclang-dev installed?)");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    if env::var("DOCS_RS").is_ok() {
        return;
    }

    let mut config = cmake::Config::new("whisper.cpp");
    config
        .profile("Release")
        .define("CMAKE_BUILD_TYPE", "Release")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("WHISPER_USE_SYSTEM_GGML", "ON")
        .define("ggml_DIR", ggml_cmake_dir.join("ggml"))
        .define("CMAKE_PREFIX_PATH", &ggml_prefix)
        .define("WHISPER_ALL_WARNINGS", "OFF")
        .define("WHISPER_ALL_WARNINGS_3RD_PARTY", "OFF")
        .define("WHISPER_BUILD_TESTS", "OFF")
        .define("WHISPER_BUILD_EXAMPLES", "OFF")
        .define("WHISPER_BUILD_SERVER", "OFF")
        .define("GGML_METAL", "OFF")
        .pic(true);
    let destination = config.build();

    println!("cargo:rustc-link-search=native={}", destination.join("lib").display());
    println!("cargo:rustc-link-search=native={}", destination.join("lib64").display());
    println!("cargo:rustc-link-lib=static=whisper");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:WHISPER_CPP_VERSION=1.8.3");
}
