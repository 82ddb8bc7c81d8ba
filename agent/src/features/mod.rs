//! The features: each folder owns its record decoding, its observer, its metric families and
//! label types, and its command-line flags.
pub mod dns;
pub mod metadata;
pub mod tcp;
