//! Compiles the protos without `protoc`: `protox` parses them into a `FileDescriptorSet`, which is
//! saved for server reflection and handed to `tonic-prost-build` for code generation.

use std::{env, fs, path::PathBuf};

use prost_types::FileDescriptorSet;
use protox::prost::Message as _;

const PROTOS: [&str; 2] = ["proto/evidenceos.proto", "proto/evidenceos_v1.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds: FileDescriptorSet = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("evidenceos_descriptor.bin"), fds.encode_to_vec())?;

    let server = env::var_os("CARGO_FEATURE_SERVER").is_some();
    let client = server || env::var_os("CARGO_FEATURE_CLIENT").is_some();
    tonic_prost_build::configure()
        .build_server(server)
        .build_client(client)
        // evidenceos.v1 messages are field-for-field copies of evidenceos.v2's, so v1 generates no
        // Rust types: its service uses crate::v2 types and one implementation serves both.
        .extern_path(".evidenceos.v1", "crate::v2")
        .compile_fds(fds)?;
    Ok(())
}
