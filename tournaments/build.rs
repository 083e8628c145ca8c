//! Generates the gRPC code for `rally.tournament.v1` from `protocol/proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    #[expect(unsafe_code, reason = "set_var is unsafe in edition 2024")]
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["../protocol/proto/tournament.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tournament_descriptor.bin"))
        .compile_protos(&protos, &["../protocol/proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
