//! Reading the TOML configuration files of every role (client, meta server,
//! file server, VM manager and agent) so that a mistake names the file, the
//! line and the field at fault: a value of the wrong type, a field the
//! program does not know (every configuration struct refuses unknown
//! fields, so a misspelt option is an error rather than a silent default),
//! a required field that is missing, or broken TOML.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration file that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// Where and why a configuration file is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The file.
    pub path: PathBuf,
    /// Line (1-based) of the fault, when known.
    pub line: Option<usize>,
    /// Column (1-based) of the fault, when known.
    pub column: Option<usize>,
    /// The field at fault as a dotted path (`tls.key`, `users[0].uid`), when
    /// the fault is a field's (not the TOML syntax).
    pub field: Option<String>,
    /// What is wrong (the parser's words).
    pub message: String,
    /// The text of the line at fault.
    pub source_line: Option<String>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ": line {line}")?;
            if let Some(c) = self.column {
                write!(f, ", column {c}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)?;
        if let (Some(line), Some(text)) = (self.line, &self.source_line) {
            write!(f, "\n  {line:>4} | {text}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Where and why, if the file was read but is not valid.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(i) => Some(i),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Read and parse `path` as a `T`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(path, &text)
}

/// Parse `text` (the contents of `path`) as a `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| invalid(path, text, None, e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().iter().next().is_some().then(|| e.path().to_string());
        invalid(path, text, at, e.into_inner())
    })
}

fn invalid(path: &Path, text: &str, at: Option<String>, e: toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    // serde names a missing field only in its message (the path is the
    // table it belongs to); an unknown one is the path's last key already.
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    // A required field missing from the top level has no line of its own
    // (the parser points at the whole document).
    let top_level_missing = at.is_none() && message.starts_with("missing field");
    let field = match (at, named) {
        (Some(t), Some(f)) if t == f || t.ends_with(&format!(".{f}")) => Some(t),
        (Some(t), Some(f)) => Some(format!("{t}.{f}")),
        (None, Some(f)) => Some(f),
        (Some(t), None) => Some(t),
        (None, None) => None,
    };
    let (line, column, source_line) = match e.span() {
        Some(_) if top_level_missing => (None, None, None),
        Some(span) => {
            let start = span.start.min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..start].chars().count() + 1;
            let source_line = text[line_start..].lines().next().unwrap_or("").to_string();
            (Some(line), Some(column), Some(source_line))
        }
        None => (None, None, None),
    };
    ConfigError::Invalid(Box::new(Invalid { path: path.to_path_buf(), line, column, field, message, source_line }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tls {
        ca: String,
        key: String,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Conf {
        name: String,
        #[serde(default)]
        port: u16,
        tls: Tls,
    }

    fn fault(text: &str) -> Invalid {
        let e = parse::<Conf>(Path::new("x.toml"), text).unwrap_err();
        e.invalid().unwrap().clone()
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let i = fault("name = \"a\"\nport = \"high\"\n[tls]\nca = \"c\"\nkey = \"k\"\n");
        assert_eq!((i.line, i.field.as_deref()), (Some(2), Some("port")), "{i}");
        assert!(i.to_string().starts_with("x.toml: line 2, column 8: field `port`: invalid type"), "{i}");
    }

    #[test]
    fn unknown_field_in_a_table() {
        let i = fault("name = \"a\"\n[tls]\nca = \"c\"\nkey = \"k\"\ncert = \"x\"\n");
        assert_eq!((i.line, i.field.as_deref()), (Some(5), Some("tls.cert")), "{i}");
    }

    #[test]
    fn missing_field() {
        let i = fault("name = \"a\"\n[tls]\nca = \"c\"\n");
        assert_eq!(i.field.as_deref(), Some("tls.key"), "{i}");
        assert_eq!(i.line, Some(2), "{i}");
        let i = fault("[tls]\nca = \"c\"\nkey = \"k\"\n");
        assert_eq!(i.field.as_deref(), Some("name"), "{i}");
        assert_eq!(i.to_string(), "x.toml: field `name`: missing field `name`");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let i = fault("name = \"a\"\nport = = 3\n");
        assert_eq!(i.line, Some(2), "{i}");
        assert_eq!(i.field, None);
    }
}
