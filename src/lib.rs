//! libpgq
