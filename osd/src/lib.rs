//! The OSD daemon (issue #3) and operator tools over the blockstore.

pub mod disk_tool;
