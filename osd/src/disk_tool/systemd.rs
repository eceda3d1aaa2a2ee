//! The systemd side of preparing and purging a disk: enabling or disabling
//! `vitastor-osd@<N>.service`, the unit the packages ship. Enabling only makes
//! `vitastor.target` start the OSD; starting it is the operator's `systemctl start`.
//!
//! # What it must never do
//! - Start or stop a unit: a daemon starting behind the operator's back is what the
//!   packaging rules forbid.

use std::process::Command;

use super::ToolError;

/// The unit of OSD `osd_num`.
pub fn osd_unit(osd_num: u64) -> String {
    format!("vitastor-osd@{osd_num}.service")
}

/// `systemctl enable` or `disable` of OSD `osd_num`'s unit.
pub fn set_enabled(osd_num: u64, enabled: bool) -> Result<(), ToolError> {
    let verb = if enabled { "enable" } else { "disable" };
    let unit = osd_unit(osd_num);
    let out = Command::new("systemctl")
        .args(["--quiet", verb, &unit])
        .output()
        .map_err(|e| ToolError::io(format!("run systemctl {verb} {unit}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ToolError::Invalid(format!(
        "systemctl {verb} {unit} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
