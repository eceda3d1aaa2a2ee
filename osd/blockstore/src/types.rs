//! Object identity inside the blockstore: the wire protocol's [`ObjectId`] and
//! [`ObjVerId`] (one definition for the wire and the store, so the OSD passes ids between
//! them without converting).

pub use vitastor_protocol::{ObjVerId, ObjectId};
