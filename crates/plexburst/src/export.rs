//! Export of the Plex data folder: tar | zstd, checksum, verification, manifest.
