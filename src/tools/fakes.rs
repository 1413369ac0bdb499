//! A fake tool for the tools' tests: it sleeps, then echoes its arguments or fails.

use std::time::Duration;

use serde_json::{json, Value};

use super::tool::{Tool, ToolError};

/// A tool for tests: sleeps, then echoes its arguments or fails.
pub struct Fake {
    pub name: &'static str,
    pub sleep: Duration,
    pub fail: bool,
}

impl Tool for Fake {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "A test tool."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    fn limit(&self) -> Duration {
        Duration::from_millis(500)
    }
    fn call(&self, args: Value) -> Result<String, ToolError> {
        std::thread::sleep(self.sleep);
        if self.fail {
            return Err(ToolError::Failed("the fake broke".into()));
        }
        Ok(format!("echo {args}"))
    }
}
