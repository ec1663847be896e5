//! A small INI reader that remembers where every key came from, so a bad
//! value can be reported as `file:line: [section] key`.
//!
//! Syntax of the originals' files: `[section]` headers, `key = value` lines,
//! `;` or `#` starting a comment (also after a value), blank lines ignored.
//! Keys before the first header belong to section "". Pure code: runs on the
//! main thread at start-up and on the dispatcher at SIGHUP.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use thiserror::Error;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A parsed file: entries in file order (a repeated key: the last one wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// Where it came from, for error messages.
    pub source: String,
    pub entries: Vec<Entry>,
}

/// A configuration problem, always naming the file and, where there is one,
/// the line and key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Syntax { file: String, line: usize, reason: String },
    #[error("{file}:{line}: [{section}] {key} = {value:?}: {reason}")]
    BadValue { file: String, line: usize, section: String, key: String, value: String, reason: String },
    #[error("{file}: missing required key [{section}] {key}")]
    Missing { file: String, section: String, key: String },
    #[error("{flag}: {reason}")]
    BadFlag { flag: String, reason: String },
    /// The HMAC key file (issue 6); the message names the file.
    #[error(transparent)]
    Key(#[from] crate::keyfile::KeyFileError),
}

impl Ini {
    /// Parses INI text from any reader; `source` names it in errors.
    pub fn parse_reader(reader: impl Read, source: &str) -> Result<Self, ConfigError> {
        let mut ini = Ini { source: source.to_string(), entries: Vec::new() };
        let mut section = String::new();
        for (idx, line) in BufReader::new(reader).lines().enumerate() {
            let line_no = idx + 1;
            let line = line.map_err(|e| ConfigError::Io { file: source.to_string(), source: e })?;
            let text = strip_comment(&line).trim();
            if text.is_empty() {
                continue;
            }
            if let Some(rest) = text.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(ini.syntax(line_no, "section header without a closing ']'"));
                };
                section = name.trim().to_string();
                continue;
            }
            let Some((key, value)) = text.split_once('=') else {
                return Err(ini.syntax(line_no, &format!("expected 'key = value', found {text:?}")));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(ini.syntax(line_no, "empty key before '='"));
            }
            ini.entries.push(Entry {
                section: section.clone(),
                key: key.to_string(),
                value: unquote(value.trim()).to_string(),
                line: line_no,
            });
        }
        Ok(ini)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file =
            std::fs::File::open(path).map_err(|e| ConfigError::Io { file: path.display().to_string(), source: e })?;
        Self::parse_reader(file, &path.display().to_string())
    }

    /// The last entry for `section`/`key`.
    pub fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.section == section && e.key == key)
    }

    /// Every entry of `section`, in file order.
    pub fn section<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.section == section)
    }

    /// A number in `min..=max`, or `None` when the key is absent.
    pub fn num<T>(&self, section: &str, key: &str, min: T, max: T) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(e) = self.get(section, key) else {
            return Ok(None);
        };
        let range = || self.bad(e, &format!("out of range {min}..={max}"));
        let v: T = match e.value.parse() {
            Ok(v) => v,
            // A whole number that does not fit the type is out of range.
            Err(_) if e.value.parse::<i128>().is_ok() => return Err(range()),
            Err(_) => return Err(self.bad(e, "not a whole number")),
        };
        if v < min || v > max {
            return Err(range());
        }
        Ok(Some(v))
    }

    /// A number that must be present.
    pub fn required_num<T>(&self, section: &str, key: &str, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        self.num(section, key, min, max)?.ok_or_else(|| ConfigError::Missing {
            file: self.source.clone(),
            section: section.to_string(),
            key: key.to_string(),
        })
    }

    /// A value parsed by `parse`, whose error text becomes the reason.
    pub fn parsed<T>(
        &self,
        section: &str,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(e) = self.get(section, key) else {
            return Ok(None);
        };
        parse(&e.value).map(Some).map_err(|reason| self.bad(e, &reason))
    }

    /// A boolean: 1/0, true/false, yes/no, on/off.
    pub fn bool(&self, section: &str, key: &str) -> Result<Option<bool>, ConfigError> {
        self.parsed(section, key, |v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("not a boolean (use true or false)".to_string()),
        })
    }

    /// The error for a bad value of `entry`.
    pub fn bad(&self, entry: &Entry, reason: &str) -> ConfigError {
        ConfigError::BadValue {
            file: self.source.clone(),
            line: entry.line,
            section: entry.section.clone(),
            key: entry.key.clone(),
            value: entry.value.clone(),
            reason: reason.to_string(),
        }
    }

    fn syntax(&self, line: usize, reason: &str) -> ConfigError {
        ConfigError::Syntax { file: self.source.clone(), line, reason: reason.to_string() }
    }
}

/// Drops a `;` or `#` comment that starts the line or follows whitespace.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if (*b == b';' || *b == b'#') && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = "; guestServer config\n[agent]\nrx_port = 2401 ; to agent\nvim_cmd_port = 2410\n\n[client]\nrx_port = 2411\nhbs_pulse_period = 400\nhbs_failure_threshold = 1\n[debug]\ndebug_all = 0\n";

    #[test]
    fn reads_the_shipped_file() {
        let ini = Ini::parse_reader(SHIPPED.as_bytes(), "guestServer.ini").unwrap();
        assert_eq!(ini.required_num::<u16>("agent", "rx_port", 1, 65535).unwrap(), 2401);
        assert_eq!(ini.num::<u32>("client", "hbs_pulse_period", 0, 10_000).unwrap(), Some(400));
        assert_eq!(ini.get("client", "rx_port").unwrap().line, 7);
        assert_eq!(ini.num::<u32>("client", "nothing", 0, 1).unwrap(), None);
    }

    #[test]
    fn bad_values_name_file_line_section_and_key() {
        let ini = Ini::parse_reader("[client]\n\nrx_port = 24x1\n".as_bytes(), "x.ini").unwrap();
        let err = ini.required_num::<u16>("client", "rx_port", 1, 65535).unwrap_err();
        assert_eq!(err.to_string(), "x.ini:3: [client] rx_port = \"24x1\": not a whole number");
        let ini = Ini::parse_reader("[client]\nrx_port = 0\n".as_bytes(), "x.ini").unwrap();
        let err = ini.required_num::<u16>("client", "rx_port", 1, 65535).unwrap_err();
        assert!(err.to_string().contains("out of range 1..=65535"), "{err}");
        let err = ini.required_num::<u16>("agent", "rx_port", 1, 65535).unwrap_err();
        assert_eq!(err.to_string(), "x.ini: missing required key [agent] rx_port");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Ini::parse_reader("[a]\nthis is not a pair\n".as_bytes(), "f").unwrap_err();
        assert!(err.to_string().starts_with("f:2: expected 'key = value'"), "{err}");
        let err = Ini::parse_reader("[a\n".as_bytes(), "f").unwrap_err();
        assert!(err.to_string().starts_with("f:1: section header"), "{err}");
    }

    #[test]
    fn comments_quotes_and_last_wins() {
        let text = "[s]\nk = \"a b\" ; c\nk2=x#y\nk2 = z\n";
        let ini = Ini::parse_reader(text.as_bytes(), "f").unwrap();
        assert_eq!(ini.get("s", "k").unwrap().value, "a b");
        assert_eq!(ini.get("s", "k2").unwrap().value, "z");
        assert_eq!(ini.section("s").count(), 3);
        assert_eq!(
            ini.bool("s", "k").unwrap_err().to_string(),
            "f:2: [s] k = \"a b\": not a boolean (use true or false)"
        );
    }
}
