//! Generated gRPC code for `protocol/proto/matchmaker.proto`.

/// `rally.matchmaker.v1`: the service, its client and its messages.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    reason = "generated code: which lints fire depends on the protos"
)]
pub mod matchmaker {
    tonic::include_proto!("rally.matchmaker.v1");
}

/// The service's descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("matchmaker_descriptor");
