//! Bit-level reader and writer used by the snapshot encoding.
//!
//! Bits are written least-significant first into little-endian bytes: the first
//! bit written is bit 0 of byte 0. This is the order PROTOCOL.md documents.

use crate::DecodeError;

/// Appends values of 1 to 32 bits to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct BitWriter<'a> {
    out: Option<&'a mut Vec<u8>>,
    scratch: u64,
    n_scratch: u32,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out: Some(out), scratch: 0, n_scratch: 0 }
    }

    /// Writes the low `n_bits` of `value` (`n_bits` ≤ 32).
    pub(crate) fn write(&mut self, value: u32, n_bits: u32) {
        debug_assert!(n_bits <= 32);
        if n_bits == 0 {
            return;
        }
        let masked = u64::from(value) & ((1u64 << n_bits) - 1);
        self.scratch |= masked << self.n_scratch;
        self.n_scratch += n_bits;
        while self.n_scratch >= 8 {
            if let Some(out) = self.out.as_deref_mut() {
                out.push(self.scratch as u8);
            }
            self.scratch >>= 8;
            self.n_scratch -= 8;
        }
    }

    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write(u32::from(bit), 1);
    }

    /// Flushes the last partial byte, padding with zero bits.
    pub(crate) fn finish(mut self) {
        if self.n_scratch > 0 {
            if let Some(out) = self.out.as_deref_mut() {
                out.push(self.scratch as u8);
            }
            self.n_scratch = 0;
        }
    }
}

/// Reads values written by [`BitWriter`]; running past the end is an error.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    bit_pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, bit_pos: 0 }
    }

    /// Reads `n_bits` (≤ 32) as an unsigned value.
    pub(crate) fn read(&mut self, n_bits: u32) -> Result<u32, DecodeError> {
        debug_assert!(n_bits <= 32);
        let end = self.bit_pos + n_bits as usize;
        if end > self.bytes.len() * 8 {
            return Err(DecodeError::Truncated);
        }
        let mut value: u64 = 0;
        let mut n_read = 0u32;
        while n_read < n_bits {
            let byte = self.bytes[self.bit_pos / 8];
            let offset = (self.bit_pos % 8) as u32;
            let take = (8 - offset).min(n_bits - n_read);
            let chunk = (u64::from(byte) >> offset) & ((1u64 << take) - 1);
            value |= chunk << n_read;
            n_read += take;
            self.bit_pos += take as usize;
        }
        Ok(value as u32)
    }

    pub(crate) fn read_bit(&mut self) -> Result<bool, DecodeError> {
        Ok(self.read(1)? == 1)
    }

    /// Bytes not yet touched (a partially read byte counts as consumed).
    pub(crate) fn remaining_bytes(&self) -> usize {
        self.bytes.len() - self.bit_pos.div_ceil(8)
    }
}

/// Maps signed to unsigned so small magnitudes get small codes: 0, -1, 1, -2, 2 → 0, 1, 2, 3, 4.
pub(crate) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(crate) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_across_byte_boundaries() {
        let mut buf = Vec::new();
        let mut writer = BitWriter::new(&mut buf);
        let values = [(1, 1), (0b101, 3), (0xABCD, 16), (0xDEAD_BEEF, 32), (5, 7)];
        for &(v, n) in &values {
            writer.write(v, n);
        }
        writer.finish();
        assert_eq!(buf.len(), (1 + 3 + 16 + 32 + 7usize).div_ceil(8));
        let mut reader = BitReader::new(&buf);
        for &(v, n) in &values {
            assert_eq!(reader.read(n).unwrap(), v);
        }
        assert_eq!(reader.remaining_bytes(), 0);
    }

    #[test]
    fn reading_past_the_end_is_an_error() {
        let mut reader = BitReader::new(&[0xFF]);
        assert_eq!(reader.read(6).unwrap(), 0b111111);
        assert!(matches!(reader.read(3), Err(DecodeError::Truncated)));
    }

    #[test]
    fn zigzag_orders_by_magnitude() {
        let pairs = [(0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4), (i64::MIN, u64::MAX)];
        for (signed, unsigned) in pairs {
            assert_eq!(zigzag(signed), unsigned);
            assert_eq!(unzigzag(unsigned), signed);
        }
    }
}
