//! Stoa node configuration: one struct per TOML section, one defaults table, environment overrides
//! and one [`NodeConfig::validate`] for ranges and relations between fields.
//!
//! Layout:
//! - `sections`: the defaults table. Every section struct, field, unit, default and doc comment is
//!   declared there once; `Default` and [`documented_defaults`] are generated from it.
//! - `env`: `STOA_<SECTION>_<FIELD>` overrides, generic over the sections.
//! - `validate`: ranges and relations, each refusal naming the field.
//! - `error`: [`ConfigError`].
//!
//! Loading order: parse the TOML file (unknown fields are errors, missing fields take defaults),
//! apply environment overrides, resolve relative TLS paths against the file's directory, validate.
//! `node.data_dir` is not resolved: it stays relative to the node's working directory.

mod env;
mod error;
mod sections;
mod validate;

#[cfg(test)]
mod tests;

pub use error::ConfigError;
pub use sections::{
    ChatSection, ClusterSection, LimitsSection, NodeSection, PeerConfig, PresenceSection,
    RaftSection, TlsSection,
};

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use toml::{Table, Value};

/// A node's whole configuration, as read from its TOML file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    pub tls: TlsSection,
    pub raft: RaftSection,
    pub limits: LimitsSection,
    pub chat: ChatSection,
    pub presence: PresenceSection,
}

/// Name given to text parsed by [`NodeConfig::from_toml_str`] in [`ConfigError::Parse`].
const INLINE_FILE: &str = "<string>";

impl NodeConfig {
    /// Reads the TOML file at `path`, applies `STOA_<SECTION>_<FIELD>` environment overrides,
    /// resolves relative TLS paths against the file's directory and validates.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        load_with_env(path, &env_vars())
    }

    /// The pure core of [`NodeConfig::load`]: parses `text`, applies the overrides found in `env`
    /// and validates. Paths are left as written.
    pub fn from_toml_str(text: &str, env: &[(String, String)]) -> Result<NodeConfig, ConfigError> {
        let config = parse(text, env, Path::new(INLINE_FILE))?;
        config.validate()?;
        Ok(config)
    }
}

/// [`NodeConfig::load`] with the environment passed in.
pub(crate) fn load_with_env(
    path: &Path,
    env: &[(String, String)],
) -> Result<NodeConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut config = parse(&text, env, path)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let tls = &mut config.tls;
    for file in [&mut tls.ca_cert, &mut tls.node_cert, &mut tls.node_key] {
        if file.is_relative() {
            *file = base.join(&*file);
        }
    }
    config.validate()?;
    Ok(config)
}

/// Parses `text` (named `file` in errors) and applies the environment overrides; no validation.
fn parse(text: &str, env: &[(String, String)], file: &Path) -> Result<NodeConfig, ConfigError> {
    let parse_error = |source| ConfigError::Parse {
        file: file.to_owned(),
        source,
    };
    // Deserializing the text itself first gives errors in the file their line and column.
    let from_file: NodeConfig = toml::from_str(text).map_err(parse_error)?;
    let overrides = env::overrides(&default_table(), env)?;
    if overrides.is_empty() {
        return Ok(from_file);
    }
    let file_table: Table = text.parse().map_err(parse_error)?;
    let mut table = file_table.clone();
    for o in &overrides {
        o.apply(&mut table)?;
    }
    match Value::Table(table).try_into() {
        Ok(config) => Ok(config),
        Err(source) => {
            // The file alone deserialized, so an override is to blame: find which one.
            for o in &overrides {
                let mut alone = file_table.clone();
                o.apply(&mut alone)?;
                if let Err(e) = Value::Table(alone).try_into::<NodeConfig>() {
                    return Err(o.error(e.message().to_owned()));
                }
            }
            Err(parse_error(source))
        }
    }
}

/// The process environment, skipping variables whose name or value is not UTF-8.
fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The default config as a TOML table.
fn default_table() -> Table {
    // Every field of the default config is a TOML integer, bool, string or array of tables, and no
    // path in it is non-UTF-8, so serialization cannot fail.
    Table::try_from(NodeConfig::default()).expect("the default config serializes to TOML")
}

/// The default config rendered as TOML, every section and field preceded by its documentation.
/// Parsing it back gives `NodeConfig::default()`.
pub fn documented_defaults() -> String {
    let table = default_table();
    let mut out = String::from(
        "# Stoa node configuration, every field at its default.\n\
         # A missing field takes the value shown here; an unknown field is an error.\n\
         # The environment variable STOA_<SECTION>_<FIELD> overrides a scalar field, for example\n\
         # STOA_NODE_ID=2, STOA_NODE_LISTEN=127.0.0.1:7402 or STOA_CLUSTER_BOOTSTRAP=true.\n",
    );
    for section in sections::SECTION_DOCS {
        out.push('\n');
        write_comment(&mut out, section.doc);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "[{}]", section.key);
        let values = table.get(section.key).and_then(Value::as_table);
        for (field, doc) in section.fields {
            write_comment(&mut out, doc);
            if let Some(value) = values.and_then(|v| v.get(*field)) {
                let _ = writeln!(out, "{field} = {value}");
            }
        }
    }
    out
}

/// Writes doc comment lines (as captured from `///`, with their leading space) as TOML comments.
fn write_comment(out: &mut String, lines: &[&str]) {
    for line in lines {
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}
