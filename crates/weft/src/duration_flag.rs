//! Duration flags, in the syntax of every duration in Weft's YAML (GEP-2257 plus days):
//! `500ms`, `10s`, `1h30m`, `7d`.

use std::time::Duration;

pub fn parse(value: &str) -> Result<Duration, String> {
    let parsed: weft_model::resources::Duration = value.parse()?;
    Ok(Duration::from_millis(parsed.as_millis()))
}
