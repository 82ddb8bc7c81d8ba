//! DNS
