//! How the Plex server process is started, stopped and restarted on the target: docker or command.
