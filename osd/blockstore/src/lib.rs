//! Blockstore
