//! Generates the Rust types of `proto/udp_repair.proto` with prost-build.
//! Needs `protoc` (Debian: protobuf-compiler); `PROTOC` overrides the path.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/udp_repair.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() && std::path::Path::new("/usr/bin/protoc").exists() {
        prost_build::Config::new()
            .protoc_executable("/usr/bin/protoc")
            .compile_protos(&["proto/udp_repair.proto"], &["proto/"])
    } else {
        prost_build::Config::new().compile_protos(&["proto/udp_repair.proto"], &["proto/"])
    }
}
