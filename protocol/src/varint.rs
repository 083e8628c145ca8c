//! LEB128 unsigned varints: 7 bits per byte, low group first, high bit = more.

use crate::DecodeError;

pub(crate) fn write_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a varint of at most 5 bytes that fits a `u32`, advancing `input`.
pub(crate) fn read_u32(input: &mut &[u8]) -> Result<u32, DecodeError> {
    let mut value: u64 = 0;
    for idx in 0..5 {
        let (&byte, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << (7 * idx);
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| DecodeError::Varint);
        }
    }
    Err(DecodeError::Varint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_are_pinned() {
        let cases: [(u32, &[u8]); 5] = [
            (0, &[0]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            write_u32(&mut out, value);
            assert_eq!(out, bytes);
            let mut input = bytes;
            assert_eq!(read_u32(&mut input), Ok(value));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn overlong_and_truncated_varints_are_refused() {
        assert_eq!(read_u32(&mut &[0xff, 0xff, 0xff, 0xff, 0x1f][..]), Err(DecodeError::Varint));
        assert_eq!(read_u32(&mut &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..]), Err(DecodeError::Varint));
        assert_eq!(read_u32(&mut &[0x80][..]), Err(DecodeError::Truncated));
    }
}
