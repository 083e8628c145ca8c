//! Generates the bus event messages (`rally.bus.v1`) from `proto/bus.proto`:
//! plain prost messages, no gRPC service, so the crate stays free of IO.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    #[expect(unsafe_code, reason = "set_var is unsafe in edition 2024")]
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    let protos = ["proto/bus.proto"];
    tonic_prost_build::configure().build_client(false).build_server(false).compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
