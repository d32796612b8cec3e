//! Facts about the target host read through the remote: tools present, CPU of Plex processes.
