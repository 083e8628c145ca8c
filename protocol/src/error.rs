//! The one error type for decoding untrusted bytes.

/// Why a datagram, frame or snapshot body was refused. Decoders return this
/// instead of panicking; callers count it and drop the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure it announced.
    #[error("input truncated")]
    Truncated,
    /// The input is longer or shorter than its structure allows.
    #[error("input length does not match its contents")]
    Length,
    /// A length or count field exceeds its protocol limit.
    #[error("{what} is {got}, over the limit of {limit}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The value found.
        got: usize,
        /// The most allowed.
        limit: usize,
    },
    /// The first byte names no known datagram kind.
    #[error("unknown datagram kind {0:#04x}")]
    UnknownKind(u8),
    /// A decoded value lies outside its field's range.
    #[error("decoded value out of range")]
    OutOfRange,
    /// A delta names a baseline the receiver does not hold, or one of another shape.
    #[error("delta baseline missing or mismatched")]
    Baseline,
    /// A variable-length integer is longer than its type allows.
    #[error("malformed varint")]
    Varint,
    /// A control frame does not start with the `RALY` magic.
    #[error("not a rally control stream (bad magic)")]
    BadMagic,
    /// The bincode payload of a control message is malformed.
    #[error("malformed control message: {0}")]
    Control(String),
}
