//! Generates the Rust types of `proto/udp_repair.proto` with prost-build.
//! Needs `protoc` (Debian: protobuf-compiler); `PROTOC` overrides the path.

/// Queued payloads are `bytes::Bytes`: a decoded image's datagrams are
/// slices of the image (`decode_bytes`), not copies.
const BYTES_FIELDS: &[&str] = &[".udp_repair.v1.RecvDatagram.payload"];

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/udp_repair.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() && std::path::Path::new("/usr/bin/protoc").exists() {
        prost_build::Config::new()
            .bytes(BYTES_FIELDS)
            .protoc_executable("/usr/bin/protoc")
            .compile_protos(&["proto/udp_repair.proto"], &["proto/"])
    } else {
        prost_build::Config::new()
            .bytes(BYTES_FIELDS)
            .compile_protos(&["proto/udp_repair.proto"], &["proto/"])
    }
}
