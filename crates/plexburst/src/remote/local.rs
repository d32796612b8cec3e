//! Remote implementation for this machine: sh -c through std::process.
