//! Generates a gRPC server for the Agones SDK services from `proto/` (the SDK's own `.proto`
//! files): the contract tests serve it as a fake SDK sidecar. The library itself uses the
//! official `agones` crate's client and none of this code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    #[expect(unsafe_code, reason = "set_var is unsafe in edition 2024")]
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    let include = protoc_bin_vendored::include_path()?;
    let protos = ["proto/sdk/sdk.proto", "proto/sdk/beta/beta.proto"].map(std::path::PathBuf::from);
    let includes = ["proto/sdk".into(), "proto/googleapis".into(), "proto/grpc-gateway".into(), include];
    tonic_prost_build::configure().build_client(false).compile_protos(&protos, &includes)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
