//! Comparison benchmarks of the tenancy SDK against peer crates. The
//! benchmarks are in `benches/`; this library is empty.
#![forbid(unsafe_code)]
