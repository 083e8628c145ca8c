//! Generated gRPC code for `protocol/proto/matchmaker.proto`.
//!
//! No lint fires on it today, so nothing is suppressed; should a proto change
//! make one fire, add an `#[expect(lint, reason = "generated code")]` for it.

/// `rally.matchmaker.v1`: the service, its client and its messages.
pub mod matchmaker {
    tonic::include_proto!("rally.matchmaker.v1");
}

/// The service's descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("matchmaker_descriptor");
