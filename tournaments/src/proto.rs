//! Generated gRPC code for `protocol/proto/tournament.proto`.

/// `rally.tournament.v1`: the service, its client and its messages.
pub mod tournament {
    tonic::include_proto!("rally.tournament.v1");
}

/// The service's descriptors, for server reflection and the contract layer.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tournament_descriptor");
