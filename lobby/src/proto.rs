//! Generated gRPC code for the `.proto` files in `protocol/proto/`.
//!
//! No lint fires on it today, so nothing is suppressed; should a proto change
//! make one fire, add an `#[expect(lint, reason = "generated code")]` for it.

/// `rally.auth.v1`.
pub mod auth {
    tonic::include_proto!("rally.auth.v1");
}

/// `rally.profile.v1`.
pub mod profile {
    tonic::include_proto!("rally.profile.v1");
}

/// `rally.chat.v1`.
pub mod chat {
    tonic::include_proto!("rally.chat.v1");
}

/// Every service's descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rally_descriptor");
