//! The checklist as Linkerd users know it: sections, one line per check
//! (`√` passed, `‼` a warning, `×` failed), and under a problem what was
//! found and a hint.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Worth knowing; does not fail `weft check`.
    Warn,
    Fail,
}

/// One line of the checklist, with what was found when it did not pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub title: &'static str,
    pub status: Status,
    pub details: Vec<String>,
    pub hint: Option<String>,
}

impl Check {
    pub fn pass(title: &'static str) -> Check {
        Check { title, status: Status::Pass, details: Vec::new(), hint: None }
    }

    pub fn fail(title: &'static str, details: Vec<String>, hint: &str) -> Check {
        Check { title, status: Status::Fail, details, hint: Some(hint.to_owned()) }
    }

    pub fn warn(title: &'static str, details: Vec<String>, hint: &str) -> Check {
        Check { title, status: Status::Warn, details, hint: Some(hint.to_owned()) }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub name: &'static str,
    pub checks: Vec<Check>,
}

impl Section {
    pub fn new(name: &'static str, checks: Vec<Check>) -> Section {
        Section { name, checks }
    }
}

/// No check failed (warnings pass).
pub fn passed(sections: &[Section]) -> bool {
    sections.iter().flat_map(|s| &s.checks).all(|c| c.status != Status::Fail)
}

/// The whole report, ending with the verdict line.
pub fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        let _ = writeln!(out, "{}\n{}", s.name, "-".repeat(s.name.chars().count()));
        for c in &s.checks {
            let mark = match c.status {
                Status::Pass => '√',
                Status::Warn => '‼',
                Status::Fail => '×',
            };
            let _ = writeln!(out, "{mark} {}", c.title);
            for d in &c.details {
                let _ = writeln!(out, "    {d}");
            }
            if let Some(hint) = &c.hint {
                let _ = writeln!(out, "    hint: {hint}");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Status check results are {}", if passed(sections) { '√' } else { '×' });
    out
}
