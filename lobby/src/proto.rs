//! Generated gRPC code for the `.proto` files in `protocol/proto/`.

/// `rally.auth.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    reason = "generated code: which lints fire depends on the protos"
)]
pub mod auth {
    tonic::include_proto!("rally.auth.v1");
}

/// `rally.profile.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    reason = "generated code: which lints fire depends on the protos"
)]
pub mod profile {
    tonic::include_proto!("rally.profile.v1");
}

/// `rally.chat.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    reason = "generated code: which lints fire depends on the protos"
)]
pub mod chat {
    tonic::include_proto!("rally.chat.v1");
}

/// Every service's descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rally_descriptor");
