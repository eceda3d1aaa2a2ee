//! Object identity inside the blockstore.

/// An object: `(inode, stripe)`; the inode carries the pool in its top 16 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId {
    /// Inode number (pool id in the top 16 bits).
    pub inode: u64,
    /// Byte offset of the object inside the inode (or stripe + part number for EC).
    pub stripe: u64,
}

impl ObjectId {
    /// Convenience constructor.
    pub const fn new(inode: u64, stripe: u64) -> Self {
        ObjectId { inode, stripe }
    }
}

/// An object version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjVerId {
    /// The object.
    pub oid: ObjectId,
    /// Its version.
    pub version: u64,
}

impl ObjVerId {
    /// Convenience constructor.
    pub const fn new(oid: ObjectId, version: u64) -> Self {
        ObjVerId { oid, version }
    }
}
