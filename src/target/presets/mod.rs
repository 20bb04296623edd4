//! Built-in target presets. Each is a TOML table in the shape of `[targets.NAME]`,
//! merged under the operator's own keys: a preset is a configuration, not code.

/// Preset names, as `preset = "…"` takes them.
pub const NAMES: &[&str] = &["onlyoffice-group-members"];

/// The TOML text of a preset.
pub fn get(name: &str) -> Option<&'static str> {
    match name {
        "onlyoffice-group-members" => Some(include_str!("onlyoffice_group_members.toml")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for name in NAMES {
            let text = get(name).expect("listed preset exists");
            let parsed: Result<crate::config::RawTarget, _> = toml::from_str(text);
            assert!(parsed.is_ok(), "preset {name}: {parsed:?}");
        }
    }
}
