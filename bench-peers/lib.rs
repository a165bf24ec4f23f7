//! Empty: this workspace member exists to build `mixprec`'s benches (in
//! `../benches/`) with criterion and the peer crates as its own
//! dependencies. Run them with `cargo bench -p mixprec-bench-peers`.
