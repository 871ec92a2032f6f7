//! Keys commands.

use super::Command;

pub const COMMANDS: &[Command] = &[];
