//! Reading the fixed-size records the kernel writes into ring buffers. Every record type is a
//! `#[repr(C)]` struct from agent-common, plain old data valid for any bit pattern (`aya::Pod`);
//! a ring hands out byte slices of no particular alignment, and a slice shorter than the struct
//! (a kernel and agent built from different sources, or a bug) is an error, never a panic.
/// A record type a ring buffer carries (each feature implements it for its own).
pub trait KernelRecord: aya::Pod {
    /// What it is called in error messages.
    const WHAT: &'static str;
}

/// Why a record was dropped (counted as `credwatch_events_lost_total{reason="undecodable_event"}`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{what} of {got} bytes, expected {want}")]
    Size { what: &'static str, got: usize, want: usize },
    #[error("unknown {what} type {kind}")]
    Type { what: &'static str, kind: u8 },
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: &'static str },
}

impl RecordError {
    /// The record's type field holds a value this agent does not know.
    pub fn unknown_type<T: KernelRecord>(kind: u8) -> Self {
        Self::Type { what: T::WHAT, kind }
    }

    /// The record is whole but a field makes no sense.
    pub fn invalid<T: KernelRecord>(why: &'static str) -> Self {
        Self::Invalid { what: T::WHAT, why }
    }
}

/// The record at the start of `bytes` (a ring may round a record up; extra bytes are ignored).
pub fn read<T: KernelRecord>(bytes: &[u8]) -> Result<T, RecordError> {
    let want = size_of::<T>();
    if bytes.len() < want {
        return Err(RecordError::Size { what: T::WHAT, got: bytes.len(), want });
    }
    // SAFETY: the length was checked; T is plain old data valid for any bit pattern (aya::Pod),
    // and read_unaligned makes no assumption about the slice's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// The bytes of a record, as the kernel would write it (tests build records with this).
#[cfg(test)]
pub fn bytes_of<T: KernelRecord>(record: &T) -> Vec<u8> {
    // SAFETY: T is plain old data; its bytes are readable for its whole size.
    unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Sample {
        id: u64,
        kind: u8,
        _pad: [u8; 7],
    }
    // SAFETY: repr(C), integers only, explicit padding.
    unsafe impl aya::Pod for Sample {}
    impl KernelRecord for Sample {
        const WHAT: &'static str = "sample";
    }

    #[test]
    fn short_slices_are_errors_and_misaligned_ones_read() {
        let sample = Sample { id: 0x0102_0304_0506_0708, kind: 9, _pad: [0; 7] };
        let mut shifted = vec![0u8];
        shifted.extend(bytes_of(&sample));
        shifted.push(0xff); // a ring may round a record up
        assert_eq!(read::<Sample>(&shifted[1..]), Ok(sample));
        assert_eq!(
            read::<Sample>(&shifted[1..16]),
            Err(RecordError::Size { what: "sample", got: 15, want: 16 })
        );
        assert_eq!(RecordError::unknown_type::<Sample>(4).to_string(), "unknown sample type 4");
    }
}
