//! `Preferences.xml`: read attributes (the server's `PlexOnlineToken`, identifiers) with an XML parser.
