//! The OSD wire protocol (client ↔ OSD, OSD ↔ OSD).
