//! Environment overrides: `STOA_<SECTION>_<FIELD>` sets the scalar field `<section>.<field>`.
//!
//! Generic over the sections: a variable applies when its section and field exist in the default
//! config's serialized table, and its value is parsed as the TOML type of that field's default
//! (integer, bool, float, or string for addresses and paths). Other `STOA_` variables (the client's
//! `STOA_SERVER`, `STOA_TOKEN`, `STOA_CA`) are ignored.

use crate::ConfigError;
use toml::{Table, Value};

const PREFIX: &str = "STOA_";

/// One variable that names a config field, with its value parsed for that field.
#[derive(Debug)]
pub(crate) struct Override {
    pub(crate) var: String,
    pub(crate) raw: String,
    pub(crate) section: String,
    pub(crate) field: String,
    pub(crate) value: Value,
}

impl Override {
    /// Writes the value into `table` (the parsed file), creating the section if the file has none.
    pub(crate) fn apply(&self, table: &mut Table) -> Result<(), ConfigError> {
        let section = table
            .entry(self.section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match section {
            Value::Table(section) => {
                section.insert(self.field.clone(), self.value.clone());
                Ok(())
            }
            _ => Err(self.error(format!(
                "the config file's `{}` is not a table",
                self.section
            ))),
        }
    }

    pub(crate) fn error(&self, reason: String) -> ConfigError {
        ConfigError::Env {
            var: self.var.clone(),
            value: self.raw.clone(),
            field: format!("{}.{}", self.section, self.field),
            reason,
        }
    }
}

/// Picks the variables that name a field of `defaults` (the default config, serialized) and parses
/// their values. Fails on a variable that names a field but cannot set it.
pub(crate) fn overrides(
    defaults: &Table,
    env: &[(String, String)],
) -> Result<Vec<Override>, ConfigError> {
    let mut found = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        // Section keys have no underscore, so the first one separates section from field.
        let Some((section, field)) = rest.split_once('_') else {
            continue;
        };
        let Some(default) = defaults
            .get(section)
            .and_then(Value::as_table)
            .and_then(|s| s.get(field))
        else {
            continue;
        };
        let value = parse_like(default, raw.trim()).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            value: raw.clone(),
            field: format!("{section}.{field}"),
            reason,
        })?;
        found.push(Override {
            var: var.clone(),
            raw: raw.clone(),
            section: section.to_owned(),
            field: field.to_owned(),
            value,
        });
    }
    Ok(found)
}

/// Parses `raw` as a TOML scalar of the same type as `default`.
fn parse_like(default: &Value, raw: &str) -> Result<Value, String> {
    match default {
        Value::Integer(_) => raw
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|e| format!("not an integer: {e}")),
        Value::Boolean(_) => match raw {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err("not a boolean (true or false)".to_owned()),
        },
        Value::Float(_) => raw
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| format!("not a number: {e}")),
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Array(_) | Value::Table(_) | Value::Datetime(_) => {
            Err("not settable from the environment; set it in the config file".to_owned())
        }
    }
}
