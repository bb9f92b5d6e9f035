//! What a migros daemon (`migrosd`) and its clients share, and nothing else:
//! the verbs types ([`verbs`]), the messages on the unix socket ([`msg`]),
//! the connection manager's messages ([`cm`]), their framing ([`frame`]), the layouts of the rings that live in the
//! client's memory ([`ring`]), counters ([`counters`]) and where the sockets
//! are ([`paths`]).
//!
//! The control path (creating objects, modifying QPs) is request/response
//! over a unix stream socket. The data path avoids the socket where it can:
//! work requests go into rings in the client's own memory and a doorbell
//! frame tells the daemon how far the ring is filled; completions come back
//! through a ring the daemon writes into client memory (with an owner/phase
//! byte written last), so polling a CQ costs no system call.

pub mod admin;
mod bytes;
pub mod cm;
pub mod counters;
pub mod frame;
pub mod msg;
pub mod paths;
pub mod ring;
pub mod verbs;

pub use frame::{FrameError, FrameReader};
pub use msg::{DeviceInfo, Event, Request, Response, PROTOCOL_VERSION};
