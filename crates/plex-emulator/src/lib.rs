//! plex-emulator: a PMS-compatible server for tests and the local demo.
