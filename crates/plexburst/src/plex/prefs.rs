//! Which preferences plexburst changes and why: every background task off during the run, only the
//! analysis a section needs on during its turn, and the user's values restored at the end.
