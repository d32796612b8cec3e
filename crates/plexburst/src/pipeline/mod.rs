//! The pipeline: phase order, persistence of each phase in the run state, resume.
