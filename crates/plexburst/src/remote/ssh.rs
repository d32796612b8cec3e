//! Remote implementation over the system ssh client with a ControlMaster socket.
