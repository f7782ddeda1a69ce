//! What the ops tests share: a command's output as text, and JSON parsed
//! with the text in the panic.

use std::process::Output;

/// A command's stdout then stderr, as text (for messages and matching).
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `s` parsed as JSON; a panic that shows `s` if it is not.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}
