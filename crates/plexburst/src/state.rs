//! The run state file: versioned JSON, written atomically with mode 0600, locked against a second run.
