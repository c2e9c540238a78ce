//! The LocalMesh file of `weft up -f` (`weft_cli::meshfile`).
//!
//! Checks: no panic; an error names at least one problem, and a YAML
//! error's line is inside the file; an accepted file plans (`plan::Plan`,
//! what `weft up` runs) without a panic.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use weft_cli::meshfile::{LoadedMesh, MeshFileError};
use weft_cli::plan::{Mode, Plan};

/// The last line an error may name. YAML ends a line at `\r\n`, a lone
/// `\r`, `\n`, and the Unicode breaks NEL, LS and PS (YAML 1.1, libyaml),
/// so a reported line may exceed what `str::lines` counts; and at the end
/// of a file without a final break libyaml's position is one line further.
fn yaml_lines(text: &str) -> usize {
    let text = text.replace("\r\n", "\n");
    2 + text.chars().filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')).count()
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    match LoadedMesh::parse(text, Path::new("mesh.yaml"), PathBuf::from("/fuzz")) {
        Ok(mesh) => {
            for mode in [Mode::Netns, Mode::Loopback { block: 9 }] {
                let plan = Plan::new(&mesh.file, mode, 1, Path::new("/usr/bin/weft"), &[]);
                let _ = plan.services_yaml();
            }
        }
        Err(MeshFileError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty(), "refused without a reason");
            let lines = yaml_lines(text);
            for p in &problems {
                if let Some((line, _)) = p.location {
                    assert!(line <= lines, "problem at line {line} of a {lines}-line file: {p:?}");
                }
            }
        }
        Err(other) => panic!("parsing text cannot fail to read: {other}"),
    }
});
