//! plexburst library.
