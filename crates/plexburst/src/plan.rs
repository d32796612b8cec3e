//! Config -> Plan: everything the run will do, as plain data (no I/O).
