//! Entry point of the library: dispatch a parsed command line to its action and return the exit code.
