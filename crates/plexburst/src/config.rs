//! plexburst.toml: schema, defaults, and validation with errors that name the field and the fix.
